"""Training: config, Lightning module/datamodule, ``train``, plain checkpoints (docs/architecture.md)."""
from mattergen_kit.model.checkpoint import (CheckpointError, diffusion_from_config, load_checkpoint, load_denoiser,
                                            load_model, save_checkpoint)
from mattergen_kit.training.config import TrainConfig
from mattergen_kit.training.export import export_lightning_checkpoint


def __getattr__(name):  # lazy: keep lightning out of the import path of users who only need TrainConfig
    if name in ("DiffusionModule", "CrystalDataModule"):
        from mattergen_kit.training import module

        return getattr(module, name)
    if name in ("train", "train_cli", "export_module"):
        from mattergen_kit.training import fit as _fit

        return getattr(_fit, name)
    raise AttributeError(f"module 'mattergen_kit.training' has no attribute {name!r}")


__all__ = ["TrainConfig", "DiffusionModule", "CrystalDataModule", "train", "train_cli", "export_module",
           "save_checkpoint", "load_checkpoint", "load_denoiser", "load_model", "diffusion_from_config", "export_lightning_checkpoint", "CheckpointError"]
