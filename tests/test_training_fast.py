"""The pure-torch GPU recipe (training/fast.py), run on CPU with a tiny network on real bundled crystals."""

import subprocess
import sys

import pytest
import torch

from mattergen_kit.training import fast


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory):
    return fast.pack_bundled(tmp_path_factory.mktemp("pack") / "pack.pt", limit_train=96, limit_val=24)


def _config(pack, out, **kw):
    return fast.FastConfig(pack=str(pack), out=str(out), device="cpu", hidden=32, layers=2, batch_size=16,
                           warmup_steps=2, val_every_s=1e9, **kw)


def test_pack_holds_the_bundled_crystals(small_pack):
    from mattergen_kit.datasets import load_bundled

    pack = fast.load_pack(small_pack)
    train = pack["splits"]["train"]
    assert len(train["num_atoms"]) == 96 and int(train["num_atoms"].sum()) == len(train["atom_types"])
    first = load_bundled("train", progress=False)[0]
    n = int(first.num_atoms[0])
    assert torch.equal(train["atom_types"][:n], first.atom_types)
    assert torch.allclose(train["lattice"][0], first.lattice[0])
    assert 0.03 < pack["density"] < 0.09 and abs(sum(pack["num_atoms_histogram"]) - 1) < 1e-9


def test_device_batch_gathers_whole_crystals(small_pack):
    split = fast.load_pack(small_pack)["splits"]["train"]
    crystals = fast.DeviceCrystals(split, torch.device("cpu"))
    batch = crystals.batch(torch.tensor([5, 0, 5]))
    n = split["num_atoms"]
    start = int(n[:5].sum())
    assert batch.num_atoms.tolist() == [int(n[5]), int(n[0]), int(n[5])]
    assert torch.equal(batch.atom_types[: int(n[5])], split["atom_types"][start:start + int(n[5])])
    assert torch.equal(batch.frac_coords[-int(n[5]):], split["frac_coords"][start:start + int(n[5])])


def test_train_writes_a_loadable_model_and_resumes(small_pack, tmp_path):
    import mattergen_kit as mk

    path = fast.train_fast(_config(small_pack, tmp_path, max_steps=6), log=lambda m: None)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["step"] == 6
    model = mk.load_model(path)
    assert model.meta["global_step"] == 6 and model.denoiser.config.crystal_summary
    crystals = model.generate(2, seed=0, steps=3, progress=False)
    assert len(crystals) == 2 and all(len(s) >= 1 for s in crystals)
    fast.train_fast(_config(small_pack, tmp_path, max_steps=9), log=lambda m: None)  # same command resumes
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 9


def test_runs_without_pymatgen_or_lightning(small_pack, tmp_path):
    code = ("import sys; sys.modules['pymatgen'] = None; sys.modules['lightning'] = None\n"
            "from mattergen_kit.training import fast\n"
            f"fast.main(['train', '--pack', {str(small_pack)!r}, '--out', {str(tmp_path)!r}, '--device', 'cpu', "
            "'--hidden', '16', '--layers', '1', '--batch-size', '8', '--max-steps', '2', '--warmup-steps', '1'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "done: step 2" in result.stdout


def test_foreign_pack_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="not a mattergen_kit training pack"):
        fast.load_pack(bad)


# --------------------------------------------------------------------------- conditioned packs and fine-tunes
@pytest.fixture(scope="module")
def cond_pack(tmp_path_factory):
    return fast.pack_conditioned(tmp_path_factory.mktemp("cpack") / "cond.pt", limit_train=64, limit_val=16)


def test_conditioned_pack_encodes_labels_like_the_lightning_path(cond_pack):
    """The adapter sees the same embeddings whether the labels come from the pack (GPU recipe) or from the
    datamodule's label columns (Lightning recipe): real bundled crystals with their label-table rows."""
    from mattergen_kit.conditioning import Adapter, PropertySpec, batch_conditions
    from mattergen_kit.data.crystal_batch import CrystalBatch
    from mattergen_kit.training.config import TrainConfig
    from mattergen_kit.training.module import CrystalDataModule

    pack = fast.load_pack(cond_pack)
    specs = [PropertySpec.from_dict(d) for d in pack["properties"]]
    assert [s.name for s in specs] == TrainConfig.from_yaml("configs/conditioned_cpu.yaml").properties
    crystals = fast.DeviceCrystals(pack["splits"]["train"], torch.device("cpu"))
    assert pack["labelled_counts"]["space_group"] == 64  # every crystal has a spglib label
    assert pack["labelled_counts"]["band_gap"] == int(crystals.conditions["band_gap"].isfinite().sum())
    torch.manual_seed(0)
    adapter = Adapter(specs, hidden_dim=16, num_layers=1, adapter_dim=8)
    idx = torch.arange(64)
    from_pack = adapter.embed(crystals.labels(idx), None, 64, "cpu")
    dm = CrystalDataModule(TrainConfig.from_yaml("configs/conditioned_cpu.yaml"))
    dm.setup("fit")
    batch = CrystalBatch.collate([dm.train_set[i] for i in range(64)])
    from_columns = adapter.embed(batch_conditions(batch, adapter.property_names), None, 64, "cpu")
    assert torch.allclose(from_pack, from_columns, atol=1e-6)


def test_condition_dropout_blanks_whole_labels(cond_pack):
    pack = fast.load_pack(cond_pack)
    crystals = fast.DeviceCrystals(pack["splits"]["train"], torch.device("cpu"))
    idx = torch.arange(64)
    full = crystals.labels(idx)
    dropped = crystals.labels(idx, dropout=1.0, generator=torch.Generator().manual_seed(0))
    assert int(dropped["chemical_system"].sum()) == 0 and bool((dropped["space_group"] == -1).all())
    assert bool(dropped["band_gap"].isnan().all())
    assert torch.equal(crystals.labels(idx, dropout=0.0)["chemical_system"], full["chemical_system"])


def test_conditioned_finetune_starts_from_the_base_and_loads_with_its_adapter(small_pack, cond_pack, tmp_path):
    import mattergen_kit as mk

    base = fast.train_fast(_config(small_pack, tmp_path / "base", max_steps=4), log=lambda m: None)
    tuned = fast.train_fast(_config(cond_pack, tmp_path / "cond", max_steps=3, init_from=str(base)),
                            log=lambda m: None)
    model = mk.load_model(tuned)
    assert model.denoiser.adapter.property_names[:2] == ["chemical_system", "space_group"]
    assert model.meta["labelled_counts"]["space_group"] == 64
    base_weights = torch.load(base, weights_only=True)["state_dict"]
    assert base_weights["type_embed.weight"].shape == model.denoiser.type_embed.weight.shape
    crystals = model.generate(2, seed=0, steps=3, conditions={"chemical_system": "Li-O"}, guidance_scale=1.0,
                              progress=False)
    assert all({e.symbol for e in s.composition.elements} <= {"Li", "O"} for s in crystals)


def test_per_property_finetune_keeps_only_that_property_and_the_base_sampling_settings(small_pack, cond_pack,
                                                                                        tmp_path):
    import mattergen_kit as mk
    from mattergen_kit.model.checkpoint import load_checkpoint, save_checkpoint

    base_path = fast.train_fast(_config(small_pack, tmp_path / "base", max_steps=2), log=lambda m: None)
    base = load_checkpoint(base_path)
    bias = [[0.1, 0.9], [1.0, 0.5]]
    save_checkpoint(base_path, base["model_config"], base["state_dict"], base["diffusion_config"],
                    {**base["meta"], "coherence_bias": bias, "recommended_steps": 7})
    tuned = fast.train_fast(_config(cond_pack, tmp_path / "sg", max_steps=2, init_from=str(base_path),
                                    properties="space_group", weights_dtype="float16"), log=lambda m: None)
    model = mk.load_model(tuned)
    assert model.denoiser.adapter.property_names == ["space_group"]
    assert model.meta["labelled_counts"] == {"space_group": 64}
    assert model.meta["coherence_bias"] == bias and model.meta["recommended_steps"] == 7
    assert torch.load(tuned, weights_only=True)["state_dict"]["type_embed.weight"].dtype == torch.float16
    with pytest.raises(ValueError, match="band_gapp"):
        fast.train_fast(_config(cond_pack, tmp_path / "bad", max_steps=1, properties="band_gapp"), log=lambda m: None)
    with pytest.raises(ValueError, match="not conditioned"):
        fast.train_fast(_config(small_pack, tmp_path / "bad2", max_steps=1, properties="band_gap"), log=lambda m: None)


def test_step_budget_drives_the_learning_rate_schedule(small_pack, tmp_path):
    lrs = []
    fast.train_fast(_config(small_pack, tmp_path / "steps", max_steps=12, minutes=60.0, min_lr_ratio=0.0),
                    log=lambda m: None, on_step=lambda step, lr: lrs.append(lr))
    assert len(lrs) == 12
    assert lrs[1] > lrs[0] and max(lrs) == pytest.approx(1e-3, rel=0.05) and lrs[-1] < 0.1 * max(lrs)
