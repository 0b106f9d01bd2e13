"""Packed checkpoints: the shipped models at the smallest lossless size, numbers and JSON only (no pickle).

A packed checkpoint is a zip archive (``.npz``; members compressed with LZMA) holding

* ``checkpoint.json`` — the plain checkpoint dict of :mod:`mattergen_kit.model.checkpoint` without its tensors, plus
  ``tensors`` (a list of name, dtype, shape and whether it is stored as a difference from a base model) and, for a fine-tuned
  model, ``base`` (the base checkpoint's file name and sha256);
* ``hi.npy`` / ``lo.npy`` — the high and low bytes of every 16-bit float weight, one after another in the order of
  ``tensors``. Splitting the bytes ("byte planes") groups the slowly varying sign/exponent bytes apart from the
  noisy mantissa bytes, so LZMA finds more to compress (base model 8.7 MB → 7.4 MB);
* ``other/<name>.npy`` — any other tensor (integer buffers, float32 weights) as it is.

A fine-tuned model stores its weights as the difference of bit patterns from its base model's same-named weights:

    stored = (bits(w_finetuned) − bits(w_base)) mod 2¹⁶,   bits(w_finetuned) = (stored + bits(w_base)) mod 2¹⁶

which is exact (integer arithmetic on the bit patterns, not a float subtraction) and small where fine-tuning moved a
weight little (conditioned model 14.9 MB → 10.8 MB). Reading it needs the base file, checked by sha256.

Unpacking gives back the very same tensors bit for bit (``tests/test_model_checkpoint_packed.py``).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from mattergen_kit.data.paths import sha256_file

__all__ = ["is_packed", "write_packed", "read_packed", "PackedCheckpointError"]

INDEX = "checkpoint.json"
HALF_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
HALF_BY_NAME = {v: k for k, v in HALF_DTYPES.items()}


class PackedCheckpointError(ValueError):
    """The packed file (or the base it is stored against) is damaged, foreign or missing."""


def is_packed(path: str | os.PathLike) -> bool:
    """True if ``path`` is a zip archive with a ``checkpoint.json`` member (a packed checkpoint)."""
    try:
        with zipfile.ZipFile(path) as z:
            return INDEX in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _bits(t: torch.Tensor) -> np.ndarray:
    """The 16-bit pattern of a half-precision tensor, flattened, as uint16."""
    return t.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint16).ravel()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def write_packed(path: str | os.PathLike, ckpt: dict, base_path: str | os.PathLike | None = None) -> Path:
    """Write ``ckpt`` (a checkpoint dict, tensors in ``state_dict``) packed at ``path``, atomically.

    ``base_path``: a packed base checkpoint; the 16-bit weights it shares by name and shape are stored as
    differences from it (module docstring), and its file name and sha256 are recorded."""
    path = Path(path)
    header = {k: v for k, v in ckpt.items() if k != "state_dict"}
    base_bits: dict[str, np.ndarray] = {}
    if base_path is not None:
        base_path = Path(base_path)
        base = read_packed(base_path)
        if base_path.resolve().parent != path.resolve().parent:
            raise ValueError("a packed fine-tune and its base must sit in the same folder (it is found by file name)")
        header["base"] = {"file": base_path.name, "sha256": sha256_file(base_path)}
        base_bits = {k: _bits(v) for k, v in base["state_dict"].items() if v.dtype == torch.float16}
    tensors, hi, lo, other = [], [], [], {}
    for name, t in ckpt["state_dict"].items():
        entry = {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}
        if t.dtype in HALF_DTYPES:
            bits = _bits(t)
            if name in base_bits and base_bits[name].shape == bits.shape and t.dtype == torch.float16:
                bits = bits - base_bits[name]  # uint16 arithmetic wraps: mod 2¹⁶
                entry["delta"] = True
            hi.append((bits >> 8).astype(np.uint8))
            lo.append((bits & 0xFF).astype(np.uint8))
        else:
            other[name] = t.detach().cpu().numpy()
        tensors.append(entry)  # a list: the planes follow this order
    header["tensors"] = tensors
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")  # written whole, then renamed: never half a file
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as z:
        z.writestr(INDEX, json.dumps(header, indent=1, sort_keys=True))
        z.writestr("hi.npy", _npy(np.concatenate(hi) if hi else np.zeros(0, np.uint8)))
        z.writestr("lo.npy", _npy(np.concatenate(lo) if lo else np.zeros(0, np.uint8)))
        for name, array in other.items():
            z.writestr(f"other/{name}.npy", _npy(array))
    os.replace(tmp, path)
    return path


def _read_npy(z: zipfile.ZipFile, member: str) -> np.ndarray:
    with z.open(member) as f:
        return np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)


def read_packed(path: str | os.PathLike) -> dict:
    """The checkpoint dict of a packed file: tensors in ``state_dict`` as stored (16-bit floats stay 16-bit; the
    caller converts). Raises :class:`PackedCheckpointError` with what to do."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read(INDEX))
            hi, lo = _read_npy(z, "hi.npy"), _read_npy(z, "lo.npy")
            tensors = header.pop("tensors")
            base_sd = None
            if "base" in header:
                base_sd = _read_base(path, header["base"])
            state, offset = {}, 0
            for entry in tensors:
                name = str(entry["name"])
                shape = tuple(int(n) for n in entry["shape"])
                if entry["dtype"] in HALF_BY_NAME:
                    n = int(np.prod(shape, dtype=np.int64))
                    bits = (hi[offset:offset + n].astype(np.uint16) << 8) | lo[offset:offset + n]
                    if len(bits) != n:
                        raise PackedCheckpointError(f"{path}: the weight planes end before {name!r}")
                    offset += n
                    if entry.get("delta"):
                        if base_sd is None or name not in base_sd:
                            raise PackedCheckpointError(f"{path}: {name!r} is stored against a base that lacks it")
                        bits = bits + _bits(base_sd[name])  # mod 2¹⁶
                    t = torch.from_numpy(bits.view(np.int16).reshape(shape).copy()).view(HALF_BY_NAME[entry["dtype"]])
                else:
                    t = torch.from_numpy(_read_npy(z, f"other/{name}.npy").copy())
                    if tuple(t.shape) != shape:
                        raise PackedCheckpointError(f"{path}: {name!r} has shape {tuple(t.shape)}, index says {shape}")
                state[name] = t
            if offset != len(hi) or len(hi) != len(lo):
                raise PackedCheckpointError(f"{path}: the weight planes do not match the index (damaged file)")
    except PackedCheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, json.JSONDecodeError) as err:
        raise PackedCheckpointError(f"{path} is not a readable packed checkpoint (damaged or truncated): "
                                    f"{type(err).__name__}: {err}; restore it (git checkout) or re-download it") from err
    header["state_dict"] = state
    return header


def _read_base(path: Path, base: dict) -> dict:
    base_path = path.parent / str(base.get("file", ""))
    if not base_path.is_file():
        raise PackedCheckpointError(f"{path} is stored as a difference from {base_path.name}, which is missing: "
                                    f"put {base_path.name} (sha256 {base.get('sha256', '?')[:12]}…) beside it")
    if sha256_file(base_path) != base.get("sha256"):
        raise PackedCheckpointError(f"{path} is stored against {base_path.name} with sha256 "
                                    f"{base.get('sha256', '?')[:12]}…, but the file there differs: restore the base "
                                    "model it was packed with (git checkout)")
    return read_packed(base_path)["state_dict"]
