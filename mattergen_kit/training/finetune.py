"""Fine-tune a model on your own property: a CDVAE-format table (``cif`` + property columns) or a CrystalDataset.

>>> import mattergen_kit as mk
>>> path = mk.finetune("my.csv", "my_prop", base="bundled", out="runs/my_prop", max_time_minutes=30)
>>> model = mk.load_model(path)
>>> crystals = model.generate(16, conditions={"my_prop": 2.5}, guidance_scale=2.0)

    mattergen-kit finetune --base bundled --table my.csv --property my_prop [--kind scalar|categorical] --out DIR

What happens (MatterGen ref §8.5, with the adapter of adapter.py): the base checkpoint's weights are copied, a
zero-initialised adapter for the property is added (so step 0 is exactly the base model), and ALL weights are
trained on the table's crystals with the property label dropped with probability ``condition_dropout``
(crystals without a label always get the null embedding). The architecture and diffusion settings are the
base's. Output: ``OUT/model.pt`` (a full model checkpoint with the adapter and the property's normalisation)
and ``OUT/MODEL_CARD.md``.

Property kinds: a name of the registry (``band_gap``, ``space_group``, ...) uses its spec; any other name is a
custom property, ``scalar`` (numbers, standardised, no range limits beyond finiteness) or ``categorical``
(the distinct values of the column become the categories). The kind is inferred from the column when not given
(numeric → scalar, otherwise categorical).
"""

from __future__ import annotations

import argparse
import datetime
import math
import numbers
import os
import sys
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import pandas as pd

from mattergen_kit.conditioning.properties import PROPERTIES, PropertySpec


def _examples(values: pd.Series, mask, limit: int = 3) -> str:
    return "e.g. " + ", ".join(repr(v) for v in list(values[mask])[:limit])


def check_labels(name: str, values: pd.Series, kind: str | None) -> None:
    """ValueError for labels that would train silently wrong: infinite numbers (an all-inf column used to count as
    fully labelled), and a column of numbers with a few text cells (it used to become a categorical property with
    one class per distinct number). Missing cells (empty, NaN, 'n/a') are fine: those crystals are unlabelled."""
    present = values.dropna()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        infinite = np.isinf(values.to_numpy(dtype=float))
        if infinite.any():
            raise ValueError(f"{name}: {int(infinite.sum())} of {len(values)} labels are infinite "
                             f"({_examples(values, infinite)}); a label must be a finite number: fix those cells or "
                             "leave them empty (unlabelled)")
        return
    if kind == "categorical" or len(present) == 0:
        return
    as_numbers = pd.to_numeric(present, errors="coerce")
    text = as_numbers.isna()
    if (~text).sum() > text.sum():  # mostly numbers: the text cells are mistakes, not categories
        raise ValueError(f"{name}: {int(text.sum())} of {len(present)} labels are not numbers "
                         f"({_examples(present, text.to_numpy())}) in a column of numbers; fix or empty those "
                         "cells, or pass kind='categorical' (--kind categorical) if the values are categories")


def property_spec(name: str, values: pd.Series, kind: str | None = None) -> PropertySpec:
    """The spec of property ``name`` for the training labels ``values`` (normalisation is fitted later);
    ValueError for labels :func:`check_labels` refuses."""
    if kind not in (None, "scalar", "categorical"):
        raise ValueError(f"kind must be 'scalar' or 'categorical', got {kind!r}")
    check_labels(name, values, kind)
    if name in PROPERTIES:
        spec = PROPERTIES[name]
        registry_kind = "categorical" if spec.kind == "chemical_system" else spec.kind
        if kind is not None and kind != registry_kind:
            raise ValueError(f"{name} is a {spec.kind} property of the registry; kind={kind!r} does not fit")
        return spec
    present = values.dropna()
    if len(present) == 0:
        raise ValueError(f"the column {name!r} has no values")
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    kind = kind or ("scalar" if numeric else "categorical")
    if kind == "scalar":
        if not numeric:
            raise ValueError(f"{name}: kind 'scalar' needs numbers, the column holds e.g. {present.iloc[0]!r}")
        return PropertySpec(name, "scalar", description=f"user property {name}")
    integer = numeric and bool(np.all(np.mod(present.to_numpy(dtype=float), 1) == 0))
    categories = sorted({int(v) for v in present} if integer else {str(v) for v in present})
    if len(categories) > 1000:
        raise ValueError(f"{name}: {len(categories)} distinct values is too many for a categorical property "
                         "(use kind='scalar'?)")
    return PropertySpec(name, "categorical", description=f"user property {name}", integer=integer,
                        categories=categories)


def _split(dataset, val_fraction: float, seed: int):
    n = len(dataset)
    if n < 2:
        raise ValueError(f"fine-tuning needs at least 2 crystals (a train and a val one), got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    return dataset.subset(np.sort(order[n_val:])), dataset.subset(np.sort(order[:n_val]))


def _resolve_base(base: str | Path) -> Path:
    if str(base) == "bundled":
        from mattergen_kit.generation import BUNDLED_CHECKPOINT

        return BUNDLED_CHECKPOINT
    path = Path(base)
    if path.is_dir():
        raise ValueError(f"base checkpoint {path} is a folder; give a checkpoint file (model.pt) or 'bundled'")
    if not path.is_file():
        raise FileNotFoundError(f"base checkpoint {path} does not exist (give a path or 'bundled')")
    return path


def _check_run_settings(table, out, max_steps, max_time_minutes, max_epochs, batch_size, max_atoms) -> None:
    """The limits and paths of a fine-tune, before the base or the table is read (issue 24): ``max_steps=-5`` used to
    end in Lightning's own traceback, ``max_steps=0`` or ``max_time_minutes=-1`` in "no checkpoint at model.pt", a
    folder as the table and a file as ``out`` in an OS traceback."""
    def whole(value) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    if not whole(max_steps) or not (max_steps == -1 or max_steps >= 1):
        raise ValueError(f"max_steps must be -1 (no step limit) or a whole number ≥ 1, got {max_steps!r}")
    if max_time_minutes is not None and (isinstance(max_time_minutes, bool)
                                         or not isinstance(max_time_minutes, numbers.Real)
                                         or not (math.isfinite(max_time_minutes) and max_time_minutes > 0)):
        raise ValueError(f"max_time_minutes must be a finite number of minutes > 0 (or None), got {max_time_minutes!r}")
    for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size), ("max_atoms", max_atoms)):
        if not whole(value) or value < 1:
            raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
    if isinstance(table, (str, os.PathLike)) and Path(table).is_dir():
        raise ValueError(f"table {table} is a folder; give a CDVAE-format CSV file (a cif column plus property columns)")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"out {out} is a file, not a folder; give a folder for the fine-tuned model")


def finetune(table, properties: str | list[str], base: str | Path = "bundled", kind: str | None = None,
             out: str | Path = "runs/finetune", max_steps: int = -1, max_time_minutes: float | None = 30.0,
             max_epochs: int = 1000, lr: float = 1e-4, batch_size: int = 32, condition_dropout: float = 0.2,
             val_fraction: float = 0.1, adapter_dim: int | None = None, seed: int = 0, max_atoms: int = 20,
             progress: bool = True, **config) -> Path:
    """Fine-tune ``base`` on ``table`` (CSV path or CrystalDataset) to be conditioned on ``properties``.

    Returns the path of the checkpoint ``out/model.pt``; a rerun with the same ``out`` resumes. Extra keyword
    arguments go to :class:`~mattergen_kit.training.TrainConfig` (e.g. ``warmup_steps``, ``num_threads``).
    """
    from mattergen_kit.training import TrainConfig, train
    from mattergen_kit.training.module import CrystalDataModule

    names = [properties] if isinstance(properties, str) else list(properties)
    if not names:
        raise ValueError("name at least one property to fine-tune on")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number in (0, 1), the share of crystals held out for validation "
                         f"(e.g. 0.1), got {val_fraction!r}")
    _check_run_settings(table, out, max_steps, max_time_minutes, max_epochs, batch_size, max_atoms)
    if not isinstance(table, (str, os.PathLike)) and not hasattr(table, "properties"):
        raise TypeError(f"table must be a CSV path or a CrystalDataset, got {type(table).__name__}")
    known = {f.name for f in dataclass_fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:  # checked before the table is read, not by TrainConfig after it
        raise TypeError(f"unknown fine-tuning option(s) {', '.join(unknown)}: the extra keywords are TrainConfig keys "
                        f"({', '.join(sorted(known))})")
    base_path = _resolve_base(base)
    from mattergen_kit.training import load_checkpoint

    base_adapter = load_checkpoint(base_path)["meta"].get("adapter")
    if base_adapter and [d["name"] for d in base_adapter["properties"]] != names:
        raise ValueError(f"the base {base_path.name} is already conditioned on "
                         f"{[d['name'] for d in base_adapter['properties']]}; fine-tune an unconditioned base "
                         "(e.g. 'bundled') on your properties instead")
    if isinstance(table, (str, Path)):
        from mattergen_kit.datasets import load_csv

        source = str(table)
        # like the bundled data: no elements the model cannot generate (noble gases, Tc, Pm, Z ≥ 84)
        dataset = load_csv(table, max_atoms=max_atoms, exclude_elements=True, progress=progress)
    else:
        source, dataset = getattr(table, "name", "") or type(table).__name__, table
    kinds = kind if isinstance(kind, (list, tuple)) else [kind] * len(names)
    specs = {}
    for name, k in zip(names, kinds):
        if name == "space_group" and name not in dataset.properties and "spacegroup" in dataset.properties:
            # the loaders' label: the source's number, else spglib with symprec 0.1 (data/parsing.py)
            dataset.properties["space_group"] = dataset.properties["spacegroup"].astype(float)
            dataset._prop_cache = None
        if name not in dataset.properties.columns:
            raise ValueError(f"the table has no {name!r} column (columns: {sorted(dataset.properties.columns)})")
        specs[name] = property_spec(name, dataset.properties[name], k)
    train_set, val_set = _split(dataset, val_fraction, seed)
    out = Path(out)
    cfg = TrainConfig(run_dir=str(out), seed=seed, init_from=str(base_path), model_from_init=True, properties=names,
                      condition_dropout=condition_dropout, adapter_dim=adapter_dim, lr=lr, batch_size=batch_size,
                      max_steps=max_steps, max_epochs=max_epochs, max_time_minutes=max_time_minutes,
                      max_atoms=max_atoms, progress_bar=progress, **{"warmup_steps": 50, "num_threads": 1,
                                                                      "ckpt_every_n_steps": 100, **config})
    datamodule = CrystalDataModule(cfg, train_set, val_set)
    datamodule.property_specs = specs
    path = train(cfg, datamodule=datamodule)
    report = getattr(dataset, "report", None)
    write_model_card(path, source=source, base=base_path, train_set=train_set, val_set=val_set, names=names,
                     skipped=report.counts() if report is not None and report.n_skipped else None)
    return path


def write_model_card(path: Path, source: str, base: Path, train_set, val_set, names: list[str],
                     skipped: dict | None = None) -> Path:
    """OUT/MODEL_CARD.md: base, data, properties with their normalisation, training length, how to sample."""
    from mattergen_kit.training import load_checkpoint

    ckpt = load_checkpoint(path)
    meta, cfg = ckpt["meta"], ckpt["meta"].get("train_config", {})
    lines = [f"# Fine-tuned model `{path.name}`", "",
             f"- base: `{base}` (architecture {ckpt['model_config']}); all weights trained, with a fresh "
             "zero-initialised adapter (mattergen_kit/conditioning/adapter.py)",
             f"- data: `{source}`: {len(train_set)} train / {len(val_set)} val crystals"
             + (f" (rows skipped by the loader: {skipped})" if skipped else ""),
             f"- training: {meta.get('global_step')} steps, lr {cfg.get('lr')}, batch {cfg.get('batch_size')}, "
             f"condition dropout {cfg.get('condition_dropout')}; val metrics {meta.get('val_metrics', {})}",
             f"- created {meta.get('created', datetime.datetime.now().isoformat(timespec='seconds'))}", "",
             "| property | kind | labelled (train) | normalisation / categories | ML label |", "|---|---|---|---|---|"]
    frame = train_set.properties
    for spec in meta["adapter"]["properties"]:
        labelled = int(frame[spec["name"]].notna().sum()) if spec["name"] in frame else 0
        norm = (f"log10: {spec['log10']}, μ = {spec['mean']:.4g}, σ = {spec['std']:.4g}" if spec["kind"] == "scalar"
                else f"{len(spec['categories'])} categories" if spec["categories"] else "multi-hot over 76 elements")
        lines.append(f"| {spec['name']} | {spec['kind']} | {labelled} of {len(frame)} | {norm} | "
                     f"{'yes' if spec['ml_label'] else 'no'} |")
    example = names[0]
    lines += ["", "Sample:", "", "```bash",
              f"mattergen-kit generate --model {path} --condition {example}=VALUE --guidance 2 --num 16 --out out/{example}",
              "```", "",
              "A fine-tune on a small table moves the samples toward the condition only as far as the data allow; "
              "check it with `mattergen_kit.evaluate` before trusting it."]
    card = path.parent / "MODEL_CARD.md"
    card.write_text("\n".join(lines) + "\n")
    return card


def finetune_cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mattergen-kit finetune",
                                description="Fine-tune a model to be conditioned on a property of your table.")
    p.add_argument("--base", default="bundled", help="base checkpoint path, or 'bundled' (default)")
    p.add_argument("--table", required=True, help="CDVAE-format CSV: a cif column plus property columns")
    p.add_argument("--property", required=True, action="append", help="property column (repeatable)")
    p.add_argument("--kind", choices=["scalar", "categorical"], default=None,
                   help="custom property kind (default: numeric columns scalar, others categorical)")
    p.add_argument("--out", default=None, help="output folder (default runs/finetune-<property>); rerun to resume")
    p.add_argument("--max-time", type=float, default=30.0, help="minutes (default 30)")
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.2, help="condition dropout probability (default 0.2)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    out = args.out or f"runs/finetune-{'-'.join(args.property)}"
    try:
        path = finetune(args.table, args.property, base=args.base, kind=args.kind, out=out,
                        max_time_minutes=args.max_time, max_steps=args.max_steps, lr=args.lr,
                        batch_size=args.batch_size, condition_dropout=args.dropout, val_fraction=args.val_fraction,
                        progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model checkpoint: {path}\nmodel card: {path.parent / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(finetune_cli())
