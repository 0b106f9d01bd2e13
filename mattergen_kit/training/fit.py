"""``train(config) -> path``: fit, resume automatically, export the EMA weights as a plain checkpoint.

Run layout (``config.run_dir``)::

    config.yaml                  the TrainConfig used
    checkpoints/last.ckpt        Lightning state (weights, EMA, optimiser, step): a rerun resumes from it
    checkpoints/best.ckpt        lowest val/loss
    logs/version_k/metrics.csv   CSV metrics (train/*, val/*, lr), one version per start or resume
    model.pt                     EMA weights, plain dict (model/checkpoint.py): what sampling loads
"""

from __future__ import annotations

import argparse
import warnings
import datetime
import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mattergen_kit.model.checkpoint import save_checkpoint
from mattergen_kit.training.config import TrainConfig
from mattergen_kit.training.lightning_checkpoint import check_lightning_checkpoint, load_lightning_checkpoint
from mattergen_kit.training.module import CrystalDataModule, DiffusionModule, num_atoms_histogram


class AllowListCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, except that resume reads through load_lightning_checkpoint (weights_only=True and
    the kit's allow-list; a planted last.ckpt is refused before unpickling). Travels with the strategy to workers."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_lightning_checkpoint(path, map_location="cpu" if map_location is None else map_location,
                                         require_state_dict=False)  # also ddp_spawn's bare weights file


def build_trainer(config: TrainConfig, callbacks=(), **overrides) -> L.Trainer:
    ckpt_dir = Path(config.run_dir) / "checkpoints"
    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                           every_n_train_steps=config.ckpt_every_n_steps)
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                           enable_version_counter=False)
    max_time = (datetime.timedelta(minutes=config.max_time_minutes) if config.max_time_minutes else None)
    kwargs = dict(
        accelerator=config.accelerator, devices=config.devices, num_nodes=config.num_nodes, strategy=config.strategy,
        precision=config.precision, max_epochs=config.max_epochs, max_steps=config.max_steps, max_time=max_time,
        check_val_every_n_epoch=config.val_every_n_epochs, gradient_clip_val=config.grad_clip or None,
        gradient_clip_algorithm=config.grad_clip_algorithm, log_every_n_steps=config.log_every_n_steps,
        callbacks=[last, best, LearningRateMonitor("step"), *callbacks],
        logger=CSVLogger(config.run_dir, name="logs"), default_root_dir=config.run_dir,
        enable_progress_bar=config.progress_bar, enable_model_summary=False, plugins=[AllowListCheckpointIO()],
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def export_module(module: DiffusionModule, path: str | Path, trainer: L.Trainer | None = None,
                  datamodule=None) -> Path:
    meta = {"train_config": module.config.to_dict(), "global_step": int(module.global_step),
            "epoch": int(module.current_epoch), "created": datetime.datetime.now().isoformat(timespec="seconds"),
            "torch": torch.__version__}
    if trainer is not None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        meta["val_metrics"] = metrics
    train_set = getattr(datamodule, "train_set", None)
    if train_set is not None:
        try:
            meta["num_atoms_histogram"] = [float(p) for p in num_atoms_histogram(train_set, module.config.max_atoms)]
        except Exception as err:  # noqa: BLE001 - a missing prior must not lose a finished training run
            warnings.warn(f"number-of-atoms prior not stored ({err}); load_model() will refuse this checkpoint "
                          "until it is re-exported with export_lightning_checkpoint(..., meta=...)")
    if module.ema.adapter is not None:  # property specs + normalisation stats: load_model rebuilds the adapter
        meta["adapter"] = module.ema.adapter.config_dict()
    return save_checkpoint(path, module.denoiser.config_dict(), module.ema.state_dict(), module.config.diffusion,
                           meta)


class ExportOnTrainEnd(L.Callback):
    """Writes the plain checkpoint from the training process itself (rank 0), so it also works under
    ddp_spawn / ddp, where the launching process never sees the trained state."""

    def __init__(self, path: Path, datamodule=None):
        self.path, self.datamodule = path, datamodule

    def on_train_end(self, trainer, module):
        if trainer.is_global_zero:
            export_module(module, self.path, trainer, self.datamodule)


def train(config: TrainConfig | str | Path, datamodule: L.LightningDataModule | None = None, diffusion=None,
          callbacks=(), **trainer_overrides) -> Path:
    """Train (or resume: ``run_dir/checkpoints/last.ckpt`` is picked up automatically); returns the path of
    the exported plain checkpoint ``run_dir/model.pt`` (EMA weights)."""
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config)
    config = config.with_model_from_init()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.to_yaml(run_dir / "config.yaml")
    L.seed_everything(config.seed, workers=True, verbose=False)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)

    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():  # refused here, before any data is read, if it is torn or names code to run
        check_lightning_checkpoint(last)
    datamodule = datamodule if datamodule is not None else CrystalDataModule(config)
    adapter = None
    if config.properties:  # normalisation stats of the training labels (conditioning/properties.py)
        from mattergen_kit.conditioning import Adapter, fit_property_specs, get_spec

        custom = getattr(datamodule, "property_specs", None) or {}   # user properties (training.finetune)
        for name in config.properties:
            if name not in custom:
                get_spec(name)  # ValueError naming the known properties, before any data is loaded
        datamodule.setup("fit")
        if last.exists():  # a resumed run keeps the normalisation it started with, even if the label tables grew
            adapter = load_lightning_checkpoint(last)["hyper_parameters"].get("adapter")
        if adapter is None:
            specs = fit_property_specs(config.properties, datamodule.train_set, custom)
            adapter = Adapter(specs, config.model.hidden_dim, config.model.num_layers, config.adapter_dim).config_dict()
    module = DiffusionModule(config, diffusion=diffusion, adapter=adapter)
    out = run_dir / "model.pt"
    trainer = build_trainer(config, [*callbacks, ExportOnTrainEnd(out, datamodule)], **trainer_overrides)
    if last.exists():
        print(f"resuming from {last}")
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    return out


def train_cli(argv: list[str] | None = None) -> int:
    """``mattergen-kit train --config FILE [--run-dir DIR] [--max-time MIN] [--set key=value ...]``."""
    import yaml

    p = argparse.ArgumentParser(prog="mattergen-kit train", description=train_cli.__doc__)
    p.add_argument("--config", required=True, help="YAML file of TrainConfig keys (see configs/)")
    p.add_argument("--run-dir", help="where checkpoints/logs go; a rerun with the same dir resumes")
    p.add_argument("--max-time", type=float, help="wall-clock budget in minutes")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--accelerator")
    p.add_argument("--devices")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig key (value parsed as YAML), repeatable; the network's as "
                        "model.KEY, e.g. --set model.hidden_dim=64")
    args = p.parse_args(argv)
    overrides = {"run_dir": args.run_dir, "max_time_minutes": args.max_time, "max_epochs": args.max_epochs,
                 "max_steps": args.max_steps, "accelerator": args.accelerator,
                 "devices": yaml.safe_load(args.devices) if args.devices else None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        config = TrainConfig.from_yaml(args.config, **overrides)
    except (OSError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = train(config)
    print(f"model checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(train_cli())
