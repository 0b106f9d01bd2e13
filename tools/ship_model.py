"""Copy a finished training run's exported model into the package as the bundled checkpoint.

    python tools/ship_model.py runs/bundled_cpu_v2b --wall-minutes 217 --hardware "2 CPU cores (x86_64)" \
        --config configs/history/bundled_cpu_v2.yaml --recommended-steps 100 --type-temperature 0.8 --lineage "..."

Adds to the checkpoint's meta what the model card needs (the commit that trained it, wall time,
hardware, the reproduce command, the recommended CPU sampling steps) and prints the meta as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from mattergen_kit.generation import BUNDLED_CHECKPOINT
from mattergen_kit.model.checkpoint import load_checkpoint, save_checkpoint


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--wall-minutes", type=float, required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--commit", default=None, help="commit the run was trained from (default: HEAD)")
    p.add_argument("--recommended-steps", type=int, default=1000)
    p.add_argument("--config", default="configs/bundled_cpu.yaml")
    p.add_argument("--type-temperature", type=float, default=1.0, help="the measured default τ of the type reveals")
    p.add_argument("--lineage", default=None, help="the training legs that led to this model, in words")
    p.add_argument("--coherence-bias", default=None,
                   help="JSON [[t...], [beta...]] printed by benchmarks/bench_type_coherence.py --fit for this model")
    p.add_argument("--dest", default=str(BUNDLED_CHECKPOINT),
                   help="where to write it (default: the bundled checkpoint; e.g. checkpoints/archive/NAME.pt to keep "
                        "a trained leg that is not shipped yet)")
    p.add_argument("--weights-dtype", default="float32", choices=["float32", "float16"],
                   help="storage precision of the weights (float16 halves the file; loaded back as float32)")
    p.add_argument("--run-file", default="model.pt", help="the exported model inside run_dir")
    p.add_argument("--reproduce", default=None, help="the command that trains it (default: mattergen-kit train --config CONFIG)")
    p.add_argument("--metrics", default=None,
                   help="where to write the run's training curves (default: training_metrics.csv beside --dest)")
    args = p.parse_args(argv)

    run = Path(args.run_dir)
    ckpt = load_checkpoint(run / args.run_file)
    commit = args.commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = dict(ckpt["meta"])
    meta.update({"dataset": "mp-bundled-20 (train split)", "trained_from_commit": commit,
                 "wall_minutes": args.wall_minutes, "hardware": args.hardware,
                 "reproduce": args.reproduce or f"mattergen-kit train --config {args.config}",
                 "recommended_steps": args.recommended_steps, "type_temperature": args.type_temperature})
    if args.lineage:
        meta["lineage"] = args.lineage
    if args.coherence_bias:
        meta["coherence_bias"] = json.loads(args.coherence_bias)
    if "num_atoms_histogram" not in meta:
        raise SystemExit("the exported model has no num_atoms_histogram: re-export it from the run")
    dest = Path(args.dest)
    save_checkpoint(dest, ckpt["model_config"], ckpt["state_dict"], ckpt["diffusion_config"], meta,
                    weights_dtype=args.weights_dtype)
    print(json.dumps({k: v for k, v in meta.items() if k != "train_config"}, indent=1))
    print(f"wrote {dest} ({dest.stat().st_size / 2**20:.2f} MB)")
    logs = sorted((run / "logs").glob("version_*/metrics.csv"))
    if logs:  # the training curves of this run (all resumes), beside the checkpoint
        import pandas as pd

        metrics = Path(args.metrics) if args.metrics else dest.with_name("training_metrics.csv")
        pd.concat([pd.read_csv(f) for f in logs]).to_csv(metrics, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
