"""Plain model checkpoints: one dict, readable without Lightning.

    {"format": "mattergen_kit.checkpoint", "version": 1,
     "model_config": {...CrystalDenoiser kwargs}, "diffusion_config": {...CrystalDiffusion kwargs},
     "state_dict": {...EMA weights}, "meta": {...plain python values}}

Loading uses ``torch.load(weights_only=True)``: no code from the file is run. The shipped models are *packed*
(:mod:`mattergen_kit.model.packed_weights`: the same dict as LZMA-compressed byte planes, numbers and JSON only; a
fine-tune stored as its difference from the base); :func:`load_checkpoint` reads both kinds, and
:func:`pack_checkpoint` turns one into the other losslessly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mattergen_kit.conditioning import adapter_from_meta
from mattergen_kit.diffusion.joint import CrystalDiffusion
from mattergen_kit.diffusion.lattice import LatticeVPSDE
from mattergen_kit.model.denoiser import CrystalDenoiser
from mattergen_kit.model.packed_weights import PackedCheckpointError, is_packed, read_packed, write_packed

FORMAT = "mattergen_kit.checkpoint"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
REQUIRED_KEYS = ("format", "version", "model_config", "state_dict")


class CheckpointError(ValueError):
    """The file is not a usable mattergen_kit checkpoint (corrupted, foreign or unsupported version)."""


# sampling settings measured on a base model (steps, type temperature, fitted coherence bias): a fine-tune inherits them
SAMPLING_META = ("recommended_steps", "type_temperature", "coherence_bias")
STORAGE_DTYPES = {"float32": None, "float16": torch.float16}   # None: the weights' own dtype (float32 models)


def save_checkpoint(path: str | Path, model_config: dict, state_dict: dict, diffusion_config: dict | None = None,
                    meta: dict | None = None, weights_dtype: str = "float32") -> Path:
    """Write atomically (temporary file + rename): a crash never leaves a half-written checkpoint.

    ``weights_dtype="float16"`` stores the floating-point weights at half the size (relative rounding ≤ 2⁻¹¹,
    used for the shipped checkpoints); :func:`load_checkpoint` returns them as float32 again."""
    if weights_dtype not in STORAGE_DTYPES:
        raise ValueError(f"weights_dtype must be one of {list(STORAGE_DTYPES)}, got {weights_dtype!r}")
    store = STORAGE_DTYPES[weights_dtype]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"format": FORMAT, "version": VERSION, "model_config": json.loads(json.dumps(model_config)),
            "diffusion_config": json.loads(json.dumps(diffusion_config or {}, default=str)),
            "state_dict": {k: (v.detach().cpu().to(store) if store is not None and v.is_floating_point()
                               else v.detach().cpu()).clone() for k, v in state_dict.items()},
            "weights_dtype": weights_dtype,
            "meta": json.loads(json.dumps(meta or {}, default=str))}  # plain values only: weights_only loads
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint written by :func:`save_checkpoint`; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        if is_packed(path):
            ckpt = read_packed(path)
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PackedCheckpointError as err:
        raise CheckpointError(str(err)) from err
    except Exception as err:  # zip/pickle errors differ between torch versions: report them all the same way
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupted, truncated or not a torch file): "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and "pytorch-lightning_version" in ckpt:
            hint = (" It is a Lightning training checkpoint; convert it with "
                    "mattergen_kit.training.export_lightning_checkpoint(path, out_path).")
        raise CheckpointError(f"{path} is not a mattergen_kit checkpoint (no format={FORMAT!r} marker).{hint}")
    if ckpt.get("version") not in SUPPORTED_VERSIONS:
        raise CheckpointError(f"{path} is a mattergen_kit checkpoint of version {ckpt.get('version')!r}; this "
                              f"mattergen_kit reads versions {list(SUPPORTED_VERSIONS)} (upgrade mattergen_kit?)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is missing {missing}")
    ckpt.setdefault("diffusion_config", {})
    ckpt.setdefault("meta", {})
    ckpt["state_dict"] = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
                          for k, v in ckpt["state_dict"].items()}  # half-precision storage → float32 weights
    return ckpt


def pack_checkpoint(source: str | Path, out_path: str | Path, base: str | Path | None = None) -> Path:
    """Write the checkpoint at ``source`` (either kind) packed at ``out_path``, its tensors bit for bit as stored
    (float16 weights stay float16); ``base``: a packed base model in the same folder to store the weights as a
    difference from (a fine-tune). Checks that reading the result gives the same tensors."""
    source, out_path = Path(source), Path(out_path)
    raw = read_packed(source) if is_packed(source) else torch.load(source, map_location="cpu", weights_only=True)
    write_packed(out_path, raw, base)
    again = read_packed(out_path)["state_dict"]
    for name, t in raw["state_dict"].items():
        if not (again[name].dtype == t.dtype and torch.equal(again[name], t)):
            out_path.unlink()
            raise CheckpointError(f"packing {source} changed {name!r}: nothing written")
    return out_path


def diffusion_from_config(config: dict | None = None):
    """CrystalDiffusion from a plain dict: ``density`` (atoms/Å³ of the lattice prior; default the reference
    0.0577), ``fields`` (all three, or ["coords", "lattice"] for CSP), ``weights``, ``min_t``."""
    kw = dict(config or {})
    density = kw.pop("density", None)
    unknown = set(kw) - {"fields", "weights", "min_t"}
    if unknown:
        raise ValueError(f"unknown diffusion config keys {sorted(unknown)} (known: density, fields, weights, min_t)")
    if "fields" in kw:
        kw["fields"] = tuple(kw["fields"])
    return CrystalDiffusion(lattice=LatticeVPSDE(density=density) if density else None, **kw)


def load_model(path_or_ckpt: str | Path | dict, device: str | torch.device = "cpu"):
    """(denoiser in eval mode with EMA weights, CrystalDiffusion, checkpoint dict) of a plain checkpoint."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    return load_denoiser(ckpt, device), diffusion_from_config(ckpt["diffusion_config"]), ckpt


def load_denoiser(path_or_ckpt: str | Path | dict, device: str | torch.device = "cpu"):
    """The CrystalDenoiser of a checkpoint (EMA weights), in eval mode."""
    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    model = CrystalDenoiser(**ckpt["model_config"])
    if ckpt.get("meta", {}).get("adapter"):  # a conditioned model: its adapter (specs + normalisation) is described in meta
        model.adapter = adapter_from_meta(ckpt["meta"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit CrystalDenoiser({ckpt['model_config']}): {err}") from err
    return model.to(device).eval()
