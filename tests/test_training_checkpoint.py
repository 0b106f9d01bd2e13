"""Plain checkpoints (save/load, clear errors) and TrainConfig YAML."""
import pytest
import torch

from mattergen_kit.model import CrystalDenoiser, DenoiserConfig
from mattergen_kit.training import (CheckpointError, TrainConfig, load_checkpoint, load_denoiser, load_model,
                                    save_checkpoint)


@pytest.fixture
def good(tmp_path):
    model = CrystalDenoiser(hidden_dim=16, num_layers=1)
    path = save_checkpoint(tmp_path / "model.pt", model.config_dict(), model.state_dict(), {"density": 0.06},
                           {"note": "test", "step": torch.tensor(3)})
    return path, model


def test_round_trip(good):
    path, model = good
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == "mattergen_kit.checkpoint" and ckpt["version"] == 1
    assert ckpt["meta"]["note"] == "test"
    loaded, diffusion, _ = load_model(path)
    assert diffusion.lattice.density == pytest.approx(0.06)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not path.with_name(path.name + ".tmp").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupted_file(good):
    path, _ = good
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)


def test_text_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not a mattergen_kit checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a mattergen_kit checkpoint"):
        load_checkpoint(path)
    torch.save({"pytorch-lightning_version": "2.4", "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="Lightning training checkpoint"):
        load_checkpoint(path)


def test_unsupported_version(good, tmp_path):
    path, _ = good
    ckpt = load_checkpoint(path)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")


def test_weights_do_not_fit(good, tmp_path):
    path, _ = good
    ckpt = load_checkpoint(path)
    ckpt["model_config"]["hidden_dim"] = 24
    with pytest.raises(CheckpointError, match="do not fit"):
        load_denoiser(ckpt)


def test_config_yaml(tmp_path):
    cfg = TrainConfig(model=DenoiserConfig(hidden_dim=64), diffusion={"density": 0.06})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", max_time_minutes=5) == TrainConfig(
        model=DenoiserConfig(hidden_dim=64), diffusion={"density": 0.06}, max_time_minutes=5)
    (tmp_path / "sci.yaml").write_text("lr: 1e-4\nmax_time_minutes: 90\n")  # YAML 1.1 reads 1e-4 as a string
    assert TrainConfig.from_yaml(tmp_path / "sci.yaml").lr == pytest.approx(1e-4)
    (tmp_path / "bad.yaml").write_text("hidden_dims: 3\n")
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n")  # would train with every default
    with pytest.raises(ValueError, match="is empty"):
        TrainConfig.from_yaml(tmp_path / "empty.yaml")


def test_init_from_starts_training_from_a_plain_checkpoint(good):
    from mattergen_kit.training import DiffusionModule

    path, model = good
    module = DiffusionModule(TrainConfig(model=DenoiserConfig(hidden_dim=16, num_layers=1,
                                                             num_freqs=model.config_dict()["num_freqs"]),
                                         init_from=str(path)))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(module.denoiser.state_dict()[k], v)
        torch.testing.assert_close(module.ema.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="hidden_dim"):
        DiffusionModule(TrainConfig(model=DenoiserConfig(hidden_dim=32, num_layers=1), init_from=str(path)))


def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path):
    from mattergen_kit.model import CrystalDenoiser
    from mattergen_kit.model.checkpoint import load_denoiser

    torch.manual_seed(0)
    model = CrystalDenoiser(hidden_dim=32, num_layers=2)
    full = save_checkpoint(tmp_path / "full.pt", model.config_dict(), model.state_dict())
    half = save_checkpoint(tmp_path / "half.pt", model.config_dict(), model.state_dict(), weights_dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert loaded["weights_dtype"] == "float16"
    for k, v in model.state_dict().items():
        got = loaded["state_dict"][k]
        assert got.dtype == v.dtype
        if v.is_floating_point():
            assert torch.allclose(got, v, rtol=2**-10, atol=1e-7), k
    assert next(load_denoiser(half).parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="weights_dtype"):
        save_checkpoint(tmp_path / "x.pt", model.config_dict(), model.state_dict(), weights_dtype="int8")


# --------------------------------------------------------------------------- the model section (issue 23)
def test_old_flat_yaml_keys_still_load_with_a_warning_naming_the_model_keys(tmp_path):
    """A config written before the model section (flat hidden_dim/num_layers/crystal_summary) gives the same
    TrainConfig as the nested form, with a DeprecationWarning naming model.<key>; a flat key and the model section
    that disagree are an error."""
    import warnings

    (tmp_path / "old.yaml").write_text("hidden_dim: 48\nnum_layers: 3\ncrystal_summary: true\nbatch_size: 8\n")
    (tmp_path / "new.yaml").write_text("model:\n  hidden_dim: 48\n  num_layers: 3\n  crystal_summary: true\n"
                                       "batch_size: 8\n")
    with pytest.warns(DeprecationWarning, match=r"old\.yaml: .*hidden_dim is now model\.hidden_dim, num_layers is "
                                                r"now model\.num_layers, crystal_summary is now model\.crystal_summary"):
        old = TrainConfig.from_yaml(tmp_path / "old.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = TrainConfig.from_yaml(tmp_path / "new.yaml")
    assert old == new and new.model == DenoiserConfig(hidden_dim=48, num_layers=3, crystal_summary=True)
    assert CrystalDenoiser(**new.model_config).config_dict() == {**DenoiserConfig().__dict__, "hidden_dim": 48,
                                                                  "num_layers": 3, "crystal_summary": True}
    (tmp_path / "both.yaml").write_text("hidden_dim: 64\nmodel:\n  hidden_dim: 48\n")
    with pytest.raises(ValueError, match="disagree; keep only model.hidden_dim"):
        TrainConfig.from_yaml(tmp_path / "both.yaml")
    (tmp_path / "typo.yaml").write_text("model:\n  hidden: 48\n")
    with pytest.raises(ValueError, match=r"unknown model keys \['hidden'\]"):
        TrainConfig.from_yaml(tmp_path / "typo.yaml")


def test_overrides_reach_the_model_section(tmp_path):
    """--set model.hidden_dim=… (or a model mapping) changes one key and keeps the file's others; the old flat
    --set hidden_dim=… still works, with the warning."""
    (tmp_path / "c.yaml").write_text("model:\n  hidden_dim: 48\n  crystal_summary: true\n")
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml", **{"model.hidden_dim": 16, "max_steps": 3})
    assert cfg.model == DenoiserConfig(hidden_dim=16, crystal_summary=True) and cfg.max_steps == 3
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", model={"num_layers": 2}).model == DenoiserConfig(
        hidden_dim=48, num_layers=2, crystal_summary=True)
    with pytest.warns(DeprecationWarning, match=r"--set model\.hidden_dim=16"):
        assert TrainConfig.from_yaml(tmp_path / "c.yaml", hidden_dim=16).model == cfg.model


def test_old_lightning_hyper_parameters_load_silently():
    """A Lightning checkpoint of an older run stores the flat dict (export.py, DiffusionModule reads it back):
    read without a warning the user could do nothing about."""
    import warnings

    from mattergen_kit.training import DiffusionModule

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = DiffusionModule({"hidden_dim": 16, "num_layers": 1, "num_freqs": 4, "composition_logits": True})
    assert module.denoiser.config == DenoiserConfig(hidden_dim=16, num_layers=1, num_freqs=4, composition_logits=True)
    assert module.hparams["config"]["model"]["hidden_dim"] == 16  # stored nested from now on


@pytest.mark.parametrize("model,expected", [
    ({"hidden_dim": 0}, "model.hidden_dim must be a positive integer"),
    ({"num_layers": 2.5}, "model.num_layers must be a positive integer"),
    ({"time_dim": 33}, "model.time_dim must be even"),
    ({"crystal_summary": "yes"}, "model.crystal_summary must be true or false"),
    ({"graph": "knn:0"}, "model.graph must be 'all' or 'knn:K'"),
])
def test_bad_model_section_is_one_line_on_the_train_command(tmp_path, capsys, model, expected):
    import yaml

    from mattergen_kit import cli

    key, value = next(iter(model.items()))
    code = cli.main(["train", "--config", "configs/tiny_test.yaml", "--run-dir", str(tmp_path / "run"),
                     "--set", f"model.{key}={yaml.safe_dump(value).splitlines()[0]}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "run").exists()
