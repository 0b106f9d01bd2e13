"""Packed checkpoints (mattergen_kit.model.packed_weights): lossless, pickle-free, clear errors when damaged."""

import shutil
import zipfile

import pytest
import torch

from mattergen_kit.generation import BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT
from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint, pack_checkpoint, save_checkpoint
from mattergen_kit.model.packed_weights import is_packed, read_packed


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_shipped_models_are_packed_and_the_fine_tune_reads_through_its_base():
    assert is_packed(BUNDLED_CHECKPOINT) and is_packed(BUNDLED_CONDITIONED_CHECKPOINT)
    base, cond = read_packed(BUNDLED_CHECKPOINT), read_packed(BUNDLED_CONDITIONED_CHECKPOINT)
    assert cond["base"]["file"] == BUNDLED_CHECKPOINT.name
    assert all(v.dtype == torch.float16 for v in base["state_dict"].values() if v.is_floating_point())
    shared = [k for k in cond["state_dict"] if k in base["state_dict"]]
    assert len(shared) > 50 and any(not torch.equal(cond["state_dict"][k], base["state_dict"][k]) for k in shared)
    assert load_checkpoint(BUNDLED_CONDITIONED_CHECKPOINT)["state_dict"][shared[0]].dtype == torch.float32


def test_pack_round_trip_is_bit_exact_with_and_without_a_base(tmp_path):
    base = tmp_path / "base.npz"
    shutil.copy(BUNDLED_CHECKPOINT, base)
    ckpt = load_checkpoint(base)
    torch.manual_seed(0)  # a "fine-tune": every weight moved a little, plus a new tensor and an integer buffer
    tuned = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    tuned["adapter.extra.weight"] = torch.randn(7, 3)
    tuned["counts"] = torch.arange(5)
    plain = save_checkpoint(tmp_path / "tuned.pt", ckpt["model_config"], tuned, ckpt["diffusion_config"],
                            {"note": "test"}, weights_dtype="float16")
    stored = torch.load(plain, weights_only=True)["state_dict"]
    for out, with_base in ((tmp_path / "alone.npz", None), (tmp_path / "tuned.npz", base)):
        pack_checkpoint(plain, out, base=with_base)
        assert _same(read_packed(out)["state_dict"], stored)
        assert load_checkpoint(out)["meta"] == {"note": "test"}
    assert (tmp_path / "tuned.npz").stat().st_size < (tmp_path / "alone.npz").stat().st_size  # the delta pays
    with zipfile.ZipFile(tmp_path / "tuned.npz") as z:  # numbers and JSON only
        assert all(n.endswith((".npy", ".json")) for n in z.namelist())


def test_damaged_or_orphaned_packed_files_fail_clearly(tmp_path):
    shutil.copy(BUNDLED_CHECKPOINT, tmp_path / BUNDLED_CHECKPOINT.name)
    cond = tmp_path / "cond.npz"
    shutil.copy(BUNDLED_CONDITIONED_CHECKPOINT, cond)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(BUNDLED_CHECKPOINT.read_bytes()[: 3_000_000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint|damaged"):
        load_checkpoint(truncated)
    (tmp_path / BUNDLED_CHECKPOINT.name).write_bytes(truncated.read_bytes())  # the base changed under the fine-tune
    with pytest.raises(CheckpointError, match="restore the base"):
        load_checkpoint(cond)
    (tmp_path / BUNDLED_CHECKPOINT.name).unlink()
    with pytest.raises(CheckpointError, match="which is missing"):
        load_checkpoint(cond)
