"""Rebuild the shipped conditioned model from the CURRENT bundled base: one command, re-run when the base changes.

    nice -n 10 python tools/build_conditioned_model.py            # ~70 min on 1 CPU thread (configs/conditioned_cpu.yaml)
    python tools/build_conditioned_model.py --properties chemical_system,space_group,band_gap   # a subset
    python tools/build_conditioned_model.py --max-time 1          # a 1-minute smoke run (writes to runs/, ships nothing)
    python tools/build_conditioned_model.py --trained runs/gpu_cond/model.pt --wall-minutes 2.3 \
        --hardware "1 H200" --reproduce "python -m mattergen_kit.training.fast train ..."   # ship a GPU fine-tune

The GPU route (training/fast.py: ``pack --conditioned`` here, then ``train --init-from BASE`` on the GPU) trains
the same objective with the same labels, dropout and adapter; ``--trained`` ships its result from here with the
same meta and card, after checking that it was fine-tuned from the current base (same architecture).

1. reads the base (default ``mattergen_kit/checkpoints/mp_bundled_20.npz``) and keys the run folder by its sha256,
   ``runs/conditioned_cpu-<sha12>``: the same base resumes an interrupted run, a new base starts afresh;
2. fine-tunes it with ``configs/conditioned_cpu.yaml`` (all weights + a zero-initialised adapter for the 8
   properties, subset condition dropout 0.2; architecture and diffusion settings from the base);
3. unless ``--no-ship``/``--max-time`` is given: writes ``mattergen_kit/checkpoints/mp_bundled_20_conditioned.npz``
   (meta: base sha, labelled counts per property, the base's sampling settings, wall time, commit) and
   ``mattergen_kit/checkpoints/CONDITIONED_MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from mattergen_kit.generation import BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT
from mattergen_kit.model.checkpoint import pack_checkpoint
from mattergen_kit.model.packed_weights import is_packed
from mattergen_kit.training import TrainConfig, load_checkpoint, save_checkpoint, train
from mattergen_kit.model.checkpoint import SAMPLING_META
from mattergen_kit.training.module import CrystalDataModule

CARD = BUNDLED_CONDITIONED_CHECKPOINT.parent / "CONDITIONED_MODEL_CARD.md"


def labelled_counts(datamodule, names: list[str]) -> dict[str, int]:
    """How many crystals of the datamodule's training set (with config.extra_train, labels attached by its
    setup) carry each label (the rest get the null embedding); train() then reuses the same datamodule."""
    from mattergen_kit.conditioning.conditions import dataset_properties

    datamodule.setup("fit")
    train_set = datamodule.train_set
    if datamodule.config.limit_train:  # count the labelled training set, not its first-n slice (tests)
        train_set = train_set.dataset
    frame = dataset_properties(train_set)
    return {n: int(frame[n].notna().sum()) for n in names}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(BUNDLED_CHECKPOINT))
    p.add_argument("--config", default="configs/conditioned_cpu.yaml")
    p.add_argument("--max-time", type=float, default=None, help="minutes (a smoke run: nothing is shipped)")
    p.add_argument("--no-ship", action="store_true", help="train only")
    p.add_argument("--trained", default=None, help="ship this already fine-tuned model (e.g. from the GPU recipe)")
    p.add_argument("--wall-minutes", type=float, default=None, help="with --trained: its training time")
    p.add_argument("--hardware", default=None, help="with --trained: where it was trained")
    p.add_argument("--reproduce", default=None, help="with --trained: the command that trained it")
    p.add_argument("--commit", default=None, help="with --trained: the commit it was trained from (default: HEAD)")
    p.add_argument("--note", default=None, help="with --trained: a sentence for the card (e.g. how the base differs)")
    p.add_argument("--weights-dtype", default="float16", choices=["float32", "float16"],
                   help="storage precision of the shipped weights (loaded back as float32)")
    p.add_argument("--properties", default=None,
                   help="comma-separated subset of the config's properties (e.g. leave out one with too few labels)")
    args = p.parse_args(argv)

    base = Path(args.base)
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    config = TrainConfig.from_yaml(args.config, init_from=str(base))
    if args.properties:
        names = [n.strip() for n in args.properties.split(",") if n.strip()]
        unknown = sorted(set(names) - set(config.properties))
        if unknown:
            raise SystemExit(f"--properties: {unknown} are not in {args.config} ({config.properties})")
        config = replace(config, properties=names)
    if args.trained:
        return ship_trained(args, base, sha)
    run_dir = f"{config.run_dir}-{sha[:12]}" + ("-smoke" if args.max_time else "")
    config = replace(config, run_dir=run_dir,
                     max_time_minutes=args.max_time if args.max_time else config.max_time_minutes)
    datamodule = CrystalDataModule(config)
    counts = labelled_counts(datamodule, config.properties)
    print(f"base {base} (sha256 {sha[:12]}), run {run_dir}; labelled train crystals: {counts}", flush=True)
    start = time.perf_counter()
    path = train(config, datamodule=datamodule)
    minutes = (time.perf_counter() - start) / 60
    if args.max_time or args.no_ship:
        print(f"trained {path} in {minutes:.1f} min; not shipped")
        return 0

    ship(load_checkpoint(path), load_checkpoint(base), base, sha, args.weights_dtype,
         labelled_train_crystals=counts, trained_from_commit=_head(), wall_minutes_this_start=round(minutes, 1),
         reproduce=f"python tools/build_conditioned_model.py --config {args.config}")
    return 0


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def ship(ckpt: dict, base_ckpt: dict, base: Path, sha: str, weights_dtype: str, **fields) -> None:
    """Write the conditioned checkpoint and its card: the fine-tune's meta, the base's sampling settings
    (SAMPLING_META), which base it came from, and ``fields`` (provenance of this training run)."""
    meta = dict(ckpt["meta"])
    meta.update({k: base_ckpt["meta"][k] for k in SAMPLING_META if k in base_ckpt["meta"]})
    try:
        shown = base.resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        shown = base
    meta.update({"base": str(shown), "base_sha256": sha,
                 "dataset": "mp-bundled-20 (train split) with datasets/labels/", **fields})
    dest = BUNDLED_CONDITIONED_CHECKPOINT
    plain = save_checkpoint(dest.with_name(dest.name + ".plain.tmp"), ckpt["model_config"], ckpt["state_dict"],
                            ckpt["diffusion_config"], meta, weights_dtype=weights_dtype)
    # shipped packed (mattergen_kit.model.packed_weights): its weights as differences from its base when that base is
    # a packed file in the same folder (the shipped pair), else on their own
    beside = base.resolve().parent == dest.resolve().parent and is_packed(base)
    pack_checkpoint(plain, dest, base=base if beside else None)
    plain.unlink()
    write_card(meta, ckpt)
    print(f"shipped {BUNDLED_CONDITIONED_CHECKPOINT} ({BUNDLED_CONDITIONED_CHECKPOINT.stat().st_size / 2**20:.1f} MB) "
          f"and {CARD.name}")


def ship_trained(args, base: Path, sha: str) -> int:
    """Ship a conditioned model trained elsewhere (the GPU recipe) from ``base``, with the card of this tool."""
    ckpt, base_ckpt = load_checkpoint(args.trained), load_checkpoint(base)
    if ckpt["model_config"] != base_ckpt["model_config"]:
        raise SystemExit(f"{args.trained} has the architecture {ckpt['model_config']}, the base {base} has "
                         f"{base_ckpt['model_config']}: it was not fine-tuned from this base")
    if not ckpt["meta"].get("adapter") or not ckpt["meta"].get("labelled_counts"):
        raise SystemExit(f"{args.trained} has no adapter/labelled counts in its meta: not a conditioned fine-tune")
    missing = [k for k in ("wall_minutes", "hardware", "reproduce") if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"--trained needs {', '.join('--' + m.replace('_', '-') for m in missing)} for the card")
    # the first GPU fine-tune (2026-11-27) predates these keys in the fast recipe's meta: its pack used the defaults
    ckpt["meta"]["train_config"] = {"condition_dropout": 0.2, "condition_dropout_mode": "subsets",
                                    "extra_train": ["aflow_bulk_modulus"], **ckpt["meta"].get("train_config", {})}
    ship(ckpt, base_ckpt, base, sha, args.weights_dtype, labelled_train_crystals=ckpt["meta"]["labelled_counts"],
         trained_from_commit=args.commit or _head(), wall_minutes_this_start=args.wall_minutes,
         hardware=args.hardware, reproduce=args.reproduce, **({"note": args.note} if args.note else {}))
    return 0


def write_card(meta: dict, ckpt: dict) -> None:
    rows = ["| property | kind | labelled train crystals | normalisation | label source |", "|---|---|---|---|---|"]
    extra = meta.get("train_config", {}).get("extra_train") or []
    for spec in meta["adapter"]["properties"]:
        source = "ML estimate (CHGNet)" if spec["ml_label"] else spec["description"]
        if spec["name"] == "bulk_modulus" and "aflow_bulk_modulus" in extra:
            source = "AFLOW AEL-AGL DFT for the added AFLOW crystals; ML estimate (CHGNet EOS) for MP crystals"
        norm = (f"{'log10, ' if spec['log10'] else ''}μ = {spec['mean']:.4g}, σ = {spec['std']:.4g}"
                if spec["kind"] == "scalar" else spec["kind"])
        rows.append(f"| {spec['name']} | {spec['kind']} | {meta['labelled_train_crystals'].get(spec['name'])} | {norm} "
                    f"| {source} |")
    cfg = meta.get("train_config", {})
    text = f"""# The conditioned bundled model `{BUNDLED_CONDITIONED_CHECKPOINT.name}`

Fine-tuned from `{meta['base']}` (sha256 {meta['base_sha256'][:12]}) with all weights trained and a fresh
zero-initialised adapter (mattergen_kit/conditioning/adapter.py, adapter width {meta['adapter']['adapter_dim']}),
condition dropout p = {cfg.get('condition_dropout')} ({cfg.get('condition_dropout_mode')}): one checkpoint for any subset of
its properties; with no conditions it is its own unconditional model. Training set: the bundled train split
{('+ ' + ', '.join(extra) + ' (datasets/labels/README.md)') if extra else ''}.

- steps {meta.get('global_step')}, lr {cfg.get('lr')}, batch {cfg.get('batch_size')}, val metrics {meta.get('val_metrics')}
- trained on {meta.get('hardware', 'CPU')} in {meta.get('wall_minutes_this_start')} min{(chr(10) + '- ' + meta['note']) if meta.get('note') else ''}
- trained from commit {meta['trained_from_commit'][:10]}, written {datetime.date.today().isoformat()}
- rebuild: `{meta['reproduce']}`

{chr(10).join(rows)}

Use: `mattergen-kit generate --condition band_gap=3.0 --condition space_group=225 --guidance 2 --num 16 --out out/`.
With `--enforce-symmetry` (Python: `enforce_symmetry=True`) the sampler keeps the requested space group exactly with
Wyckoff templates from the bundled train split (`mattergen_kit/sampling/symmetry.py`); guidance alone rarely gives an
exactly symmetric crystal with this model.
Hit rates against the targets are measured by the benchmark of issue 10 (not part of this card).
"""
    CARD.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
