"""Lightning training checkpoints (``runs/NAME/checkpoints/*.ckpt``) → the plain checkpoint of model/checkpoint.py."""

from __future__ import annotations

from pathlib import Path

from mattergen_kit.model.checkpoint import CheckpointError, save_checkpoint
from mattergen_kit.training.config import TrainConfig
from mattergen_kit.training.lightning_checkpoint import load_lightning_checkpoint


def export_lightning_checkpoint(ckpt_path: str | Path, out_path: str | Path, meta: dict | None = None) -> Path:
    """Turn a Lightning ``*.ckpt`` of :class:`DiffusionModule` (e.g. ``last.ckpt``) into a plain checkpoint
    (read with weights_only=True and the allow-list of training/lightning_checkpoint.py: no code from the file runs)."""
    raw = load_lightning_checkpoint(ckpt_path)
    hp = raw.get("hyper_parameters", {}).get("config")
    if hp is None:
        raise CheckpointError(f"{ckpt_path} is not a DiffusionModule Lightning checkpoint")
    config = TrainConfig.from_dict(hp, warn=False, source=str(ckpt_path))  # older runs: flat keys
    state = {k[len("ema."):]: v for k, v in raw["state_dict"].items() if k.startswith("ema.")}
    info = {"global_step": raw.get("global_step"), "epoch": raw.get("epoch"), "train_config": hp,
            "source": str(ckpt_path), **(meta or {})}
    if raw.get("hyper_parameters", {}).get("adapter"):
        info["adapter"] = raw["hyper_parameters"]["adapter"]
    return save_checkpoint(out_path, config.model_config, state, config.diffusion, info)
