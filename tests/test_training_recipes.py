"""Every training recipe in configs/ parses, and the ones for bigger data run a few steps on CPU with a
small slice (the real MP-20 / Alexandria files are not here: MP-20 is replaced by bundled rows through the
loader it calls, Alexandria is a dump written from bundled structures)."""

import json
from pathlib import Path

import pytest

from mattergen_kit.training import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CPU_SMOKE = dict(accelerator="cpu", devices=1, num_nodes=1, strategy="auto", precision="32-true",
                 model={"hidden_dim": 16, "num_layers": 1}, batch_size=8, limit_train=16, limit_val=8, max_steps=2, max_epochs=1,
                 max_time_minutes=None, num_workers=0, progress_bar=False, ckpt_every_n_steps=1, num_threads=1)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_parses(path, tmp_path):
    dump = tmp_path / "alexandria_000.json"
    dump.write_text("{}")
    overrides = {"data_path": str(dump)} if "alexandria" in path.name else {}
    config = TrainConfig.from_yaml(path, **overrides)
    assert config.batch_size > 0 and config.lr > 0


def test_alexandria_recipe_needs_a_data_path():
    with pytest.raises(ValueError, match="needs data_path"):
        TrainConfig.from_yaml(CONFIGS / "alexandria_ddp.yaml")


def _alexandria_dump(path: Path, structures) -> Path:
    entries = [{"@module": "pymatgen.entries.computed_structure_entry", "@class": "ComputedStructureEntry",
                "energy": -5.0 * len(s), "correction": 0.0, "entry_id": f"agm{k:09d}", "structure": s.as_dict(),
                "data": {"e_above_hull": 0.0, "mat_id": f"agm{k:09d}"}} for k, s in enumerate(structures)]
    path.write_text(json.dumps({"entries": entries}))
    return path


def test_alexandria_recipe_trains_on_cpu(tmp_path):
    import mattergen_kit as mk
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.training import train

    dump = _alexandria_dump(tmp_path / "alexandria_000.json", load_bundled("val", progress=False).structures[:60])
    config = TrainConfig.from_yaml(CONFIGS / "alexandria_ddp.yaml", run_dir=str(tmp_path / "run"),
                                   data_path=str(dump), val_fraction=0.2, **CPU_SMOKE)
    model = mk.load_model(train(config))
    assert model.meta["global_step"] == 2
    assert abs(sum(model.num_atoms_prior.probs.tolist()) - 1) < 1e-6


def test_mp20_recipe_trains_on_cpu(tmp_path, monkeypatch):
    from mattergen_kit import datasets
    from mattergen_kit.training import train

    calls = []

    def fake_mp20(split, root=None, **kw):  # stands in for the verified MP-20 download
        calls.append(split)
        return datasets.load_bundled("val" if split == "val" else "train", progress=False)

    monkeypatch.setattr(datasets, "load_mp20", fake_mp20)
    config = TrainConfig.from_yaml(CONFIGS / "mp20_ddp.yaml", run_dir=str(tmp_path / "run"), **CPU_SMOKE)
    assert Path(train(config)).is_file()
    assert calls == ["train", "val"]
