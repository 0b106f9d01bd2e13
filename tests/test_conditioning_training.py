"""Training with conditions: TrainConfig.properties, fine-tuning from a base checkpoint, the adapter in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mattergen_kit.model import CrystalDenoiser
from mattergen_kit.training import TrainConfig, load_checkpoint, save_checkpoint, train

PROPS = ["band_gap", "space_group", "chemical_system"]


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    """A tiny base model (random weights) saved as a plain checkpoint with a number-of-atoms prior."""
    torch.manual_seed(0)
    model = CrystalDenoiser(hidden_dim=16, num_layers=2, num_freqs=4)
    hist = [0.0, 0.0, 0.5, 0.0, 0.5] + [0.0] * 16
    return save_checkpoint(tmp_path_factory.mktemp("base") / "base.pt", model.config_dict(), model.state_dict(),
                           {"density": 0.05644}, {"num_atoms_histogram": hist})


def conditioned_config(run_dir, base, **kw):
    values = dict(run_dir=str(run_dir), init_from=str(base), model_from_init=True, properties=PROPS,
                  batch_size=8, limit_train=32, limit_val=8, warmup_steps=1, max_steps=6, max_epochs=10,
                  ckpt_every_n_steps=3, log_every_n_steps=1, val_every_n_epochs=1, progress_bar=False,
                  num_threads=1, lr=1e-3)
    return TrainConfig(**{**values, **kw})


@pytest.mark.timeout(300)
def test_conditioned_fine_tune_from_a_base_checkpoint(tmp_path, base_checkpoint):
    from mattergen_kit.conditioning.labels import read_label_table
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.generation import load_model

    out = train(conditioned_config(tmp_path / "run", base_checkpoint))
    ckpt = load_checkpoint(out)
    base = load_checkpoint(base_checkpoint)
    assert ckpt["model_config"] == base["model_config"]                   # architecture taken from the base
    assert ckpt["diffusion_config"] == {"density": 0.05644}
    specs = {d["name"]: d for d in ckpt["meta"]["adapter"]["properties"]}
    assert list(specs) == PROPS
    # normalisation stats = nanmean / population std of the band gaps of the 32 training crystals
    ids = load_bundled("train", progress=False).properties.material_id[:32]
    gaps = read_label_table().set_index("material_id").loc[ids, "band_gap"].dropna().to_numpy()
    assert specs["band_gap"]["mean"] == pytest.approx(gaps.mean(), rel=1e-5)
    assert specs["band_gap"]["std"] == pytest.approx(gaps.std() + 1e-5, rel=1e-5)
    # all weights were trained (ref §8.5): trunk changed, and the zero-initialised mix-in is no longer zero
    sd = ckpt["state_dict"]
    assert not torch.equal(sd["type_head.weight"], base["state_dict"]["type_head.weight"])
    assert sd["adapter.mixin.0.weight"].abs().sum() > 0
    model = load_model(out)                                                # load_model restores the adapter
    assert model.denoiser.adapter is not None and model.denoiser.adapter.property_names == PROPS
    assert torch.equal(model.denoiser.adapter.mixin[0].weight, sd["adapter.mixin.0.weight"])


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="condition_dropout must be in"):
        TrainConfig(condition_dropout=1.5)
    with pytest.raises(ValueError, match="model_from_init needs init_from"):
        TrainConfig(model_from_init=True)
    with pytest.raises(ValueError, match="condition_dropout_mode must be subsets or independent"):
        TrainConfig(condition_dropout_mode="joint")


@pytest.mark.timeout(120)
def test_unknown_or_unlabelled_property_fails_before_training(tmp_path, base_checkpoint):
    with pytest.raises(ValueError, match="unknown property 'dos'"):
        train(conditioned_config(tmp_path / "a", base_checkpoint).__class__(
            **{**conditioned_config(tmp_path / "a", base_checkpoint).to_dict(), "properties": ["dos"]}))


def test_shipped_conditioned_config_parses():
    cfg = TrainConfig.from_yaml("configs/conditioned_cpu.yaml")
    assert cfg.properties == ["chemical_system", "space_group", "band_gap", "formation_energy_per_atom",
                              "e_above_hull", "hhi_production", "magnetic_density", "bulk_modulus"]
    assert cfg.model_from_init and cfg.init_from and cfg.condition_dropout == 0.2


def test_model_from_init_copies_every_architecture_flag(tmp_path):
    from mattergen_kit.model import DenoiserConfig

    flags = {f: True for f in ("crystal_summary", "composition_logits") if f in DenoiserConfig.__dataclass_fields__}
    model = CrystalDenoiser(hidden_dim=24, num_layers=3, num_freqs=5, **flags)
    base = save_checkpoint(tmp_path / "b.pt", model.config_dict(), model.state_dict(), {"density": 0.05},
                           {"num_atoms_histogram": [0, 1.0]})
    cfg = TrainConfig(init_from=str(base), model_from_init=True).with_model_from_init()
    assert CrystalDenoiser(**cfg.model_config).config_dict() == model.config_dict() and cfg.diffusion == {"density": 0.05}
    odd = CrystalDenoiser(hidden_dim=24, num_layers=3, time_dim=32, graph="knn:6")  # every field: the model section
    base = save_checkpoint(tmp_path / "odd.pt", odd.config_dict(), odd.state_dict(), {}, {})
    cfg = TrainConfig(init_from=str(base), model_from_init=True).with_model_from_init()
    assert cfg.model.time_dim == 32 and cfg.model.graph == "knn:6"
    assert CrystalDenoiser(**cfg.model_config).config_dict() == odd.config_dict()


@pytest.mark.timeout(300)
def test_build_conditioned_model_tool_ships_checkpoint_and_card(tmp_path, base_checkpoint, monkeypatch):
    """tools/build_conditioned_model.py end to end (tiny config), so the long run cannot fail at its last step."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("build_conditioned_model", "tools/build_conditioned_model.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    shipped, card = tmp_path / "ship" / "conditioned.pt", tmp_path / "ship" / "CARD.md"
    shipped.parent.mkdir()
    monkeypatch.setattr(tool, "BUNDLED_CONDITIONED_CHECKPOINT", shipped)
    monkeypatch.setattr(tool, "CARD", card)
    cfg = conditioned_config(tmp_path / "run", base_checkpoint).to_dict()
    cfg.update(max_steps=2, ckpt_every_n_steps=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert tool.main(["--base", str(base_checkpoint), "--config", str(tmp_path / "c.yaml")]) == 0
    ckpt = load_checkpoint(shipped)
    assert ckpt["meta"]["base_sha256"] and ckpt["meta"]["labelled_train_crystals"]["band_gap"] > 10000
    assert [p["name"] for p in ckpt["meta"]["adapter"]["properties"]] == PROPS
    text = card.read_text()
    assert "| band_gap | scalar |" in text and "python tools/build_conditioned_model.py" in text
    assert list((tmp_path).glob("run-*"))                                 # the run folder is keyed by the base's sha


@pytest.mark.timeout(300)
def test_resume_keeps_the_normalisation_it_started_with(tmp_path, base_checkpoint, monkeypatch):
    """Labels added between a start and its resume (the labelling job runs on) must not change μ, σ mid-run."""
    import mattergen_kit.conditioning.conditions as cond

    first = train(conditioned_config(tmp_path / "run", base_checkpoint, max_steps=3))
    stats = {d["name"]: (d["mean"], d["std"]) for d in load_checkpoint(first)["meta"]["adapter"]["properties"]}
    original = cond.dataset_properties

    def more_gap(ds):  # the band-gap labels "grew" by +1 eV
        frame = original(ds).copy()
        frame["band_gap"] = frame["band_gap"] + 1.0
        return frame

    monkeypatch.setattr(cond, "dataset_properties", more_gap)
    again = train(conditioned_config(tmp_path / "run", base_checkpoint, max_steps=6))
    ckpt = load_checkpoint(again)
    assert ckpt["meta"]["global_step"] == 6
    assert {d["name"]: (d["mean"], d["std"]) for d in ckpt["meta"]["adapter"]["properties"]} == stats
    fresh = train(conditioned_config(tmp_path / "fresh", base_checkpoint, max_steps=1))
    (gap,) = [d for d in load_checkpoint(fresh)["meta"]["adapter"]["properties"] if d["name"] == "band_gap"]
    assert gap["mean"] > stats["band_gap"][0] + 0.5                        # a new run does see the new labels
