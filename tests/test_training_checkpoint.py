"""Plain checkpoints (save/load, clear errors) and TrainConfig YAML."""
import pytest
import torch

from mattergen_kit.model import CrystalDenoiser
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
    cfg = TrainConfig(hidden_dim=64, diffusion={"density": 0.06})
    cfg.to_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", max_time_minutes=5) == TrainConfig(
        hidden_dim=64, diffusion={"density": 0.06}, max_time_minutes=5)
    (tmp_path / "sci.yaml").write_text("lr: 1e-4\nmax_time_minutes: 90\n")  # YAML 1.1 reads 1e-4 as a string
    assert TrainConfig.from_yaml(tmp_path / "sci.yaml").lr == pytest.approx(1e-4)
    (tmp_path / "bad.yaml").write_text("hidden_dims: 3\n")
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")


def test_init_from_starts_training_from_a_plain_checkpoint(good):
    from mattergen_kit.training import DiffusionModule

    path, model = good
    module = DiffusionModule(TrainConfig(hidden_dim=16, num_layers=1, num_freqs=model.config_dict()["num_freqs"],
                                         init_from=str(path)))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(module.denoiser.state_dict()[k], v)
        torch.testing.assert_close(module.ema.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="hidden_dim"):
        DiffusionModule(TrainConfig(hidden_dim=32, num_layers=1, init_from=str(path)))


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
