"""Lightning wrappers: DiffusionModule (denoiser + CrystalDiffusion + EMA) and CrystalDataModule."""

from __future__ import annotations

import copy
import math

import lightning as L
from lightning.pytorch.callbacks import Timer
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from mattergen_kit.data.crystal_batch import CrystalBatch
from mattergen_kit.model import CrystalDenoiser
from mattergen_kit.training.config import TrainConfig
from mattergen_kit.training.schedule import ema_update, warmup_cosine


def build_diffusion(config: TrainConfig):
    from mattergen_kit.model.checkpoint import diffusion_from_config

    return diffusion_from_config(config.diffusion)


class DiffusionModule(L.LightningModule):
    """Trains ``denoiser`` with ``diffusion.training_losses``; keeps an EMA copy ``ema`` (in the state dict,
    so a resumed run restores it) that is used for validation and exported for sampling."""

    def __init__(self, config: TrainConfig | dict, diffusion=None, adapter: dict | None = None):
        """``adapter``: ``Adapter.config_dict()`` (property specs with their normalisation stats) when
        ``config.properties`` is set: a zero-initialised adapter is attached before ``init_from`` is loaded."""
        super().__init__()
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config, warn=False)  # hparams
        self.save_hyperparameters({"config": config.to_dict(), "adapter": adapter})
        self.config = config
        self.denoiser = CrystalDenoiser(**config.model_config)
        if config.properties:
            if adapter is None:
                raise ValueError("config.properties is set: pass the fitted adapter config (train() does this)")
            from mattergen_kit.conditioning import Adapter

            self.denoiser.adapter = Adapter.from_config(adapter)
        if config.init_from:
            self._init_weights_from(config.init_from)
        self.ema = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.diffusion = diffusion if diffusion is not None else build_diffusion(config)

    def _init_weights_from(self, path) -> None:
        """Copy the weights of a plain checkpoint. The architectures must match, except that the optional
        zero-initialised parts (crystal summary, composition logits) may be switched on here when the
        checkpoint lacks them: the network's output at step 0 is then exactly the checkpoint's."""
        from dataclasses import asdict

        from mattergen_kit.model import DenoiserConfig
        from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint

        growable = {"crystal_summary": ("composition_embed.", ".summary."), "composition_logits": ("composition_logits.",)}
        ckpt = load_checkpoint(path)
        theirs, ours = asdict(DenoiserConfig(**ckpt["model_config"])), self.denoiser.config_dict()
        grown = [flag for flag in growable if ours[flag] and not theirs[flag]]
        if {**theirs, **{flag: ours[flag] for flag in grown}} != ours:
            raise CheckpointError(f"init_from={path} holds a model {ckpt['model_config']} but this config builds "
                                  f"{ours}: set model.hidden_dim/num_layers/num_freqs to match, or "
                                  "model_from_init: true to take the checkpoint's")
        # a conditioned fine-tune of a base checkpoint: the adapter is new (zero-initialised mix-in, conditioning/)
        fresh_adapter = self.denoiser.adapter is not None and not any(k.startswith("adapter.") for k in ckpt["state_dict"])
        result = self.denoiser.load_state_dict(ckpt["state_dict"], strict=not (grown or fresh_adapter))
        new_parts = tuple(part for flag in grown for part in growable[flag]) + (("adapter.",) if fresh_adapter else ())
        unexpected_missing = [k for k in result.missing_keys if not any(part in "." + k for part in new_parts)]
        if unexpected_missing or result.unexpected_keys:
            raise CheckpointError(f"init_from={path}: weights do not fit (missing {unexpected_missing}, unexpected "
                                  f"{result.unexpected_keys})")

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)

    def forward(self, noisy, t, conditions=None, use_condition=None):
        return self.ema(noisy, t, conditions, use_condition)

    # ---------------------------------------------------------------- steps
    def _log_losses(self, prefix: str, losses: dict, batch_size: int, on_step: bool):
        for key, value in losses.items():
            if torch.is_tensor(value) and value.numel() == 1:
                self.log(f"{prefix}/{key}", value, batch_size=batch_size, on_step=on_step, on_epoch=not on_step,
                         prog_bar=(key == "loss"), sync_dist=not on_step)

    def _conditions(self, batch: CrystalBatch, dropout: float):
        """The batch's labels of config.properties with condition dropout (conditioning/conditions.py)."""
        if not self.config.properties:
            return None
        from mattergen_kit.conditioning import batch_conditions, drop_conditions

        return drop_conditions(batch_conditions(batch, self.config.properties), dropout,
                               mode=self.config.condition_dropout_mode)

    def training_step(self, batch: CrystalBatch, batch_idx: int):
        losses = self.diffusion.training_losses(self.denoiser, batch,
                                                conditions=self._conditions(batch, self.config.condition_dropout))
        self._log_losses("train", losses, batch.num_crystals, on_step=True)
        return losses["loss"]

    def validation_step(self, batch: CrystalBatch, batch_idx: int):
        # the same noise every epoch (seeded by batch and rank) for a stable validation curve
        gen = torch.Generator(device=batch.device)
        gen.manual_seed(self.config.seed * 1_000_003 + 7919 * self.global_rank + batch_idx)
        losses = self.diffusion.training_losses(self.ema, batch, generator=gen, conditions=self._conditions(batch, 0.0))
        self._log_losses("val", losses, batch.num_crystals, on_step=False)

    # ---------------------------------------------------------------- EMA
    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx):
        ema_update(self.ema, self.denoiser, self.global_step, self.config.ema_decay)

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        cfg = self.config
        opt = torch.optim.AdamW(self.denoiser.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.lr_schedule == "plateau":  # MatterGen style (ref §10.2), on the validation loss
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.6, patience=10,
                                                               min_lr=cfg.lr * cfg.min_lr_ratio)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch",
                                                       "frequency": cfg.val_every_n_epochs, "strict": False}}

        def factor(step: int) -> float:  # linear warm-up, then cosine from 1 to min_lr_ratio over the budget
            progress = None if cfg.lr_schedule == "constant" or step < cfg.warmup_steps else self._budget_progress(step)
            return warmup_cosine(step, cfg.warmup_steps, progress, cfg.min_lr_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


    def _budget_progress(self, step: int) -> float | None:
        """Fraction of the run's budget used: the larger of steps/total_steps and time/max_time (so a CPU run
        with a wall-clock budget still ends its cosine at the low lr). None if the budget is unbounded."""
        if not hasattr(self, "_total_steps"):  # estimated_stepping_batches is not free: ask once
            self._total_steps = self.trainer.estimated_stepping_batches
        total, max_time = self._total_steps, self.config.max_time_minutes
        fractions = [step / total] if math.isfinite(total) and total > 0 else []
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and max_time:  # Timer.time_elapsed includes the time before a resume
            fractions.append((timer.time_elapsed("train") or 0.0) / (60.0 * max_time))
        return max(fractions) if fractions else None


def _hash_split(dataset, val_fraction: float):
    """(train, val) Subsets by a fixed hash of material_id (row index where there is none): the same
    crystals land in val on every run and every rank."""
    import hashlib

    ids = (list(dataset.properties["material_id"].astype(str)) if "material_id" in dataset.properties
           else [str(i) for i in range(len(dataset))])
    in_val = [int(hashlib.sha1(i.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < val_fraction for i in ids]
    val = [i for i, v in enumerate(in_val) if v]
    train = [i for i, v in enumerate(in_val) if not v]
    if not val or not train:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty train or val set of {len(ids)} crystals")
    return Subset(dataset, train), Subset(dataset, val)


def num_atoms_histogram(dataset, max_atoms: int = 20):
    """p[N], N = 0..max_atoms, of a training set: a CrystalDataset, a Subset of one, or any sequence of
    one-crystal CrystalBatch items (the sampler's number-of-atoms prior)."""
    import numpy as np

    if isinstance(dataset, Subset) and hasattr(dataset.dataset, "num_atoms"):
        counts = np.asarray(dataset.dataset.num_atoms)[np.asarray(dataset.indices)]
    elif hasattr(dataset, "num_atoms") and not callable(dataset.num_atoms):
        counts = np.asarray(dataset.num_atoms)
    else:
        counts = np.array([int(dataset[i].num_atoms.sum()) for i in range(len(dataset))])
    if len(counts) and counts.max() > max_atoms:
        raise ValueError(f"{int((counts > max_atoms).sum())} crystals have more than {max_atoms} atoms")
    hist = np.bincount(counts, minlength=max_atoms + 1)[: max_atoms + 1].astype(float)
    return hist / max(hist.sum(), 1.0)


def load_datasets(config: TrainConfig):
    """(train, val) datasets named by ``config.dataset``, with ``config.extra_train`` appended (see TrainConfig)."""
    train, val = _load_main_datasets(config)
    if not config.extra_train:
        return train, val
    from mattergen_kit.data.dataset import CrystalDataset

    if not all(isinstance(d, CrystalDataset) for d in (train, val)):
        raise ValueError(f"extra_train needs CrystalDataset train/val sets (dataset {config.dataset!r} gave "
                         f"{type(train).__name__})")
    extra = {split: [_load_extra(name, split, config.max_atoms) for name in config.extra_train]
             for split in ("train", "val")}
    return (CrystalDataset.concat([train, *extra["train"]], name=f"{train.name}+{'+'.join(config.extra_train)}"),
            CrystalDataset.concat([val, *extra["val"]], name=f"{val.name}+{'+'.join(config.extra_train)}"))


def _load_extra(name: str, split: str, max_atoms: int):
    """One labelled bundled set of TrainConfig.extra_train, its crystals with <= max_atoms sites.

    aflow_bulk_modulus: AFLOW structures with their DFT (AEL-AGL) ``bulk_modulus``; ``space_group`` is the
    loader's spglib number (the MP crystals' comes from the label table, conditioning/labels.py)."""
    import numpy as np
    import pandas as pd

    from mattergen_kit import datasets

    if name != "aflow_bulk_modulus":  # TrainConfig validates the names; this guards a new one added there only
        raise ValueError(f"extra_train: no loader for {name!r}")
    ds = datasets.load_aflow_bulk_modulus(split)
    ds = ds.subset(np.asarray(ds.num_atoms) <= max_atoms)
    ds.properties["space_group"] = pd.to_numeric(ds.properties["spacegroup"], errors="coerce").astype(float)
    ds.properties["split"] = split
    return ds


def _load_main_datasets(config: TrainConfig):
    from mattergen_kit import datasets

    kind = config.dataset
    if kind == "bundled":  # max_atoms 20: mp-bundled-20; 52: mp-bundled-52 (cells up to 52 atoms)
        return (datasets.load_bundled("train", max_atoms=config.max_atoms),
                datasets.load_bundled("val", max_atoms=config.max_atoms))
    if kind == "mp20":  # verified CSVs under the data root; `mattergen-kit fetch-data mp20` downloads them
        return datasets.load_mp20("train", root=config.data_path), datasets.load_mp20("val", root=config.data_path)
    if kind == "alexandria":
        full = datasets.load_alexandria(config.data_path, max_atoms=config.max_atoms)
        return _hash_split(full, config.val_fraction)
    loader = datasets.load_csv if kind == "csv" else datasets.load_cif_folder
    full = loader(config.data_path, max_atoms=config.max_atoms)
    if config.val_path:
        return full, loader(config.val_path, max_atoms=config.max_atoms)
    return _hash_split(full, config.val_fraction)


class CrystalDataModule(L.LightningDataModule):
    """Train/val loaders over ``mattergen_kit.datasets.load_bundled`` (or datasets given explicitly: any
    sequence whose items are one-crystal CrystalBatch objects)."""

    def __init__(self, config: TrainConfig, train_set: Dataset | None = None, val_set: Dataset | None = None):
        super().__init__()
        self.config = config
        self.train_set, self.val_set = train_set, val_set

    def setup(self, stage: str | None = None):
        if getattr(self, "_ready", False):
            return
        self._ready = True
        if self.train_set is None or self.val_set is None:
            train, val = load_datasets(self.config)
            self.train_set = self.train_set if self.train_set is not None else train
            self.val_set = self.val_set if self.val_set is not None else val
        if self.config.properties:  # condition labels from datasets/labels/ by material_id (conditioning/labels.py)
            from mattergen_kit.conditioning.labels import attach_labels

            for ds in (self.train_set, self.val_set):
                ds = ds.dataset if isinstance(ds, Subset) else ds
                if hasattr(ds, "properties"):
                    attach_labels(ds, self.config.properties)
        if self.config.limit_train:
            self.train_set = Subset(self.train_set, range(min(self.config.limit_train, len(self.train_set))))
        if self.config.limit_val:
            self.val_set = Subset(self.val_set, range(min(self.config.limit_val, len(self.val_set))))

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.batch_size, shuffle=shuffle,
                          collate_fn=CrystalBatch.collate, num_workers=self.config.num_workers,
                          persistent_workers=self.config.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)
