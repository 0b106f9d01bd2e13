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
    kw = {"model": fast.shipped_model_shape(hidden_dim=32, num_layers=2), **kw}
    return fast.FastConfig(pack=str(pack), out=str(out), device="cpu", batch_size=16, warmup_steps=2, val_every_s=1e9,
                           **kw)


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


# --------------------------------------------------------------------------- corrupt packs (issue 24)
class _Payload:
    """Unpickling this calls builtins.exec on code that writes a marker file: what a planted pack would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _tampered(pack: dict, change) -> dict:
    """A deep copy of a real pack with ``change(copy)`` applied."""
    import copy

    out = copy.deepcopy(pack)
    change(out)
    return out


def _set(split, key, fn):
    return lambda p: p["splits"][split].__setitem__(key, fn(p["splits"][split][key]))


TAMPERED = {  # name: (change to a real pack, words the error must say)
    "wrong shape frac_coords": (_set("train", "frac_coords", lambda t: t[:, :2]), "frac_coords must be floats"),
    "NaN lattice": (_set("train", "lattice", lambda t: t.index_fill(0, torch.tensor([3]), float("nan"))),
                    "non-finite"),
    "negative atom count": (_set("val", "num_atoms", lambda t: t.index_fill(0, torch.tensor([0]), -2)),
                            "atom counts below 1"),
    "counts that do not add up": (_set("train", "num_atoms", lambda t: t + 1), "one per atom"),
    "atomic number 0": (_set("train", "atom_types", lambda t: t.index_fill(0, torch.tensor([0]), 0)),
                        "atomic numbers outside 1..100"),
    "float atom types": (_set("train", "atom_types", lambda t: t.float()), "atom_types must be 1-D integers"),
    "flat cell": (_set("val", "lattice", lambda t: t.index_fill(1, torch.tensor([2]), 0.0)), "without a volume"),
    "empty val split": (lambda p: p["splits"].__setitem__("val", {k: v[:0] for k, v in p["splits"]["val"].items()}),
                        "num_atoms must be a non-empty"),
    "no val split": (lambda p: p["splits"].pop("val"), "no train and val splits"),
    "negative density": (lambda p: p.__setitem__("density", -0.05), "density -0.05"),
    "text histogram": (lambda p: p.__setitem__("num_atoms_histogram", "uniform"), "num_atoms_histogram"),
    "version 2": (lambda p: p.__setitem__("version", 2), "version 2"),
}


def _assert_pack_error(path, *words):
    with pytest.raises(fast.PackError) as info:
        fast.load_pack(path)
    message = str(info.value)
    assert str(path) in message and "mattergen_kit.training.fast pack --out" in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_pack_is_one_clear_error(small_pack, tmp_path, case):
    change, words = TAMPERED[case]
    bad = tmp_path / "bad.pt"
    torch.save(_tampered(fast.load_pack(small_pack), change), bad)
    _assert_pack_error(bad, "damaged or was edited", words)


def test_unreadable_packs_are_one_clear_error(small_pack, tmp_path):
    """Missing, a folder, zero bytes, truncated at half and at 100 bytes, text, a bare tensor, a model checkpoint."""
    from mattergen_kit.model import CrystalDenoiser
    from mattergen_kit.model.checkpoint import save_checkpoint

    _assert_pack_error(tmp_path / "nope.pt", "does not exist")
    _assert_pack_error(tmp_path, "does not exist (it is a folder)")
    (tmp_path / "empty.pt").write_bytes(b"")
    _assert_pack_error(tmp_path / "empty.pt", "is empty (0 bytes")
    data = small_pack.read_bytes()
    for size in (len(data) // 2, 100):
        (tmp_path / f"cut{size}.pt").write_bytes(data[:size])
        _assert_pack_error(tmp_path / f"cut{size}.pt", "truncated")
    (tmp_path / "notes.pt").write_text("train: 96 crystals\n")
    _assert_pack_error(tmp_path / "notes.pt", "truncated or not a PyTorch file")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    _assert_pack_error(tmp_path / "tensor.pt", "not a mattergen_kit training pack (a Tensor)")
    net = CrystalDenoiser(hidden_dim=8, num_layers=1)
    model = save_checkpoint(tmp_path / "model.pt", net.config_dict(), net.state_dict())
    _assert_pack_error(model, "not a mattergen_kit training pack (a dict of format 'mattergen_kit.checkpoint')")


def test_planted_pack_runs_no_code(small_pack, tmp_path):
    """A pack whose pickle calls builtins.exec: refused by name before unpickling; the marker file is never written,
    by load_pack nor by the train command."""
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.pt"
    torch.save({**fast.load_pack(small_pack), "note": _Payload(marker)}, planted)
    assert "builtins.exec" in _assert_pack_error(planted, "could run code", "builtins.exec")
    assert fast.main(["train", "--pack", str(planted), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_bad_conditioned_labels_are_one_clear_error(cond_pack, tmp_path):
    pack = fast.load_pack(cond_pack)
    cases = {
        "labels of band_gap": lambda p: p["splits"]["train"]["conditions"].__setitem__(
            "band_gap", p["splits"]["train"]["conditions"]["band_gap"][:-1]),
        "labels of space_group (categorical) do not fit": lambda p: p["splits"]["val"]["conditions"]["space_group"]
        .__setitem__(0, 10_000),
        "labels of chemical_system (chemical_system) do not fit": lambda p: p["splits"]["train"]["conditions"][
            "chemical_system"].__setitem__((0, 0), 7),
        "labels for": lambda p: p["splits"]["train"]["conditions"].pop("hhi_production"),
        "labels of bulk_modulus (scalar) do not fit": lambda p: p["splits"]["train"]["conditions"]["bulk_modulus"]
        .__setitem__(0, float("inf")),
        "a property spec cannot be read": lambda p: p["properties"][0].__setitem__("kind", "vector"),
    }
    for words, change in cases.items():
        torch.save(_tampered(pack, change), tmp_path / "bad.pt")
        _assert_pack_error(tmp_path / "bad.pt", words)


def test_train_command_reports_a_bad_pack_in_one_line(small_pack, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save(_tampered(fast.load_pack(small_pack), TAMPERED["NaN lattice"][0]), bad)
    for pack in (bad, tmp_path / "missing.pt"):
        assert fast.main(["train", "--pack", str(pack), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and str(pack) in err[0], err


def test_damaged_resume_state_is_one_clear_error(small_pack, tmp_path):
    (tmp_path / "state.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="cannot resume from .*state.pt.*delete it"):
        fast.train_fast(_config(small_pack, tmp_path, max_steps=1), log=lambda m: None)
    fast.train_fast(_config(small_pack, tmp_path / "a", max_steps=1), log=lambda m: None)  # another network's state
    with pytest.raises(ValueError, match="other model settings"):
        fast.train_fast(_config(small_pack, tmp_path / "a", max_steps=2,
                                model=fast.shipped_model_shape(hidden_dim=16, num_layers=2)), log=lambda m: None)


# --------------------------------------------------------------------------- the model section (issue 23)
def test_shipped_checkpoints_old_flat_train_configs_still_load():
    """The shipped checkpoints' meta.train_config has the flat keys (hidden, layers, ...): it reads as a FastConfig
    whose model is the checkpoint's network, silently with warn=False and with a DeprecationWarning otherwise."""
    import warnings

    from mattergen_kit.generation import BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT
    from mattergen_kit.model import DenoiserConfig
    from mattergen_kit.model.checkpoint import load_checkpoint

    for path in (BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT):
        ckpt = load_checkpoint(path)
        flat = ckpt["meta"]["train_config"]
        assert flat["hidden"] == 256 and "model" not in flat  # the file is not rewritten
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cfg = fast.FastConfig.from_dict(flat, warn=False)
        assert cfg.model == DenoiserConfig.from_dict(ckpt["model_config"])
        assert cfg.lr == flat["lr"] and cfg.batch_size == 1024
        with pytest.warns(DeprecationWarning, match=r"hidden is now model\.hidden_dim, layers is now model\.num_layers"):
            assert fast.FastConfig.from_dict(flat) == cfg


def test_train_records_its_model_section_and_the_old_flags_still_work(small_pack, tmp_path):
    """meta.train_config now holds model: {...} (the network trained) and reads back as the same FastConfig; the
    command line keeps --hidden/--layers/--crystal-summary/--graph and adds the model section's own names."""
    import mattergen_kit as mk

    cfg = _config(small_pack, tmp_path / "api", max_steps=1)
    meta = mk.load_model(fast.train_fast(cfg, log=lambda m: None)).meta["train_config"]
    assert meta["model"]["hidden_dim"] == 32 and "hidden" not in meta
    assert fast.FastConfig.from_dict(meta) == cfg
    common = ["train", "--pack", str(small_pack), "--device", "cpu", "--batch-size", "8", "--max-steps", "1",
              "--warmup-steps", "1", "--val-every-s", "1e9"]
    assert fast.main(common + ["--out", str(tmp_path / "old"), "--hidden", "16", "--layers", "1",
                               "--crystal-summary", "false", "--graph", "knn:4"]) == 0
    assert fast.main(common + ["--out", str(tmp_path / "new"), "--hidden-dim", "16", "--num-layers", "1",
                               "--crystal-summary", "false", "--graph", "knn:4", "--num-freqs", "4"]) == 0
    old, new = (mk.load_model(tmp_path / name / "model.pt").denoiser.config for name in ("old", "new"))
    assert (old.hidden_dim, old.num_layers, old.crystal_summary, old.composition_logits, old.graph) == (
        16, 1, False, True, "knn:4")
    assert new == fast.shipped_model_shape(hidden_dim=16, num_layers=1, crystal_summary=False, graph="knn:4",
                                           num_freqs=4)
    assert fast.main(common + ["--out", str(tmp_path / "bad"), "--hidden", "0"]) == 2  # one error line
