"""The 52-atom recipe in miniature on one CPU thread: train a small model on mp-bundled-52, then sample 40-atom cells.

    python -m mattergen_kit.training.fast pack --max-atoms 52 --out runs/pack/mp-bundled-52.pt
    OMP_NUM_THREADS=1 python benchmarks/recipe_52_cpu.py --pack runs/pack/mp-bundled-52.pt \\
        --out benchmarks/results/recipe_52_cpu.json

It proves that the pieces fit (the pack of cells up to 52 atoms, its number-of-atoms prior, the k-nearest graph,
the cell-choice augmentation, fast.py's loop, a float16 checkpoint, ``load_model`` and ``sample(num_atoms=40)``),
not that a few CPU minutes make good crystals. The JSON gives the training log's validation losses and, per
sampled cell, its formula, N, volume per atom, smallest interatomic distance and whether every pair is ≥ 0.5 Å.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mattergen_kit.generation import load_model  # noqa: E402
from mattergen_kit.training.fast import FastConfig, load_pack, shipped_model_shape, train_fast  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="runs/pack/mp-bundled-52.pt")
    p.add_argument("--run", default="runs/recipe52_cpu")
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--init-from", default=None, help="warm start (e.g. the shipped base); its cells are sampled too")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--graph", default="knn:24")
    p.add_argument("--cell-augment", type=float, default=0.3)
    p.add_argument("--num", type=int, default=4)
    p.add_argument("--num-atoms", type=int, default=40)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", default="benchmarks/results/recipe_52_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    pack = load_pack(args.pack)
    hist = np.asarray(pack["num_atoms_histogram"])
    log_lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    cfg = FastConfig(pack=args.pack, out=args.run, minutes=args.minutes,
                     model=shipped_model_shape(hidden_dim=args.hidden, num_layers=args.layers, graph=args.graph),
                     batch_size=args.batch_size, lr=args.lr, warmup_steps=50, init_from=args.init_from,
                     val_every_s=60.0, device="cpu", bf16=False,
                     cell_augment=args.cell_augment, weights_dtype="float16")
    start = time.perf_counter()
    path = train_fast(cfg, log=log)
    train_s = time.perf_counter() - start
    models = {"trained": path} | ({"init_from (no 52-atom training)": args.init_from} if args.init_from else {})
    cells, sample_s, prior_len = {}, {}, {}
    for name, model_path in models.items():
        model = load_model(model_path, device="cpu")
        start = time.perf_counter()
        batch = model.sample(args.num, seed=0, steps=args.steps, num_atoms=args.num_atoms, batch_size=args.num,
                             progress=False)
        sample_s[name] = time.perf_counter() - start
        prior_len[name] = int(model.num_atoms_prior.probs.numel())
        cells[name] = []
        for s in batch.to_structures():
            dist = s.distance_matrix + np.eye(len(s)) * 1e9
            cells[name].append({"formula": s.composition.reduced_formula, "num_atoms": len(s),
                                "volume_per_atom": s.volume / len(s), "min_distance": float(dist.min()),
                                "all_pairs_ge_0.5A": bool(dist.min() >= 0.5)})
    result = {"pack": pack.get("name"), "train_crystals": int(len(pack["splits"]["train"]["num_atoms"])),
              "prior_p_N_gt_20": float(hist[21:].sum()), "prior_max_N": int(np.nonzero(hist)[0].max()),
              "config": {k: v for k, v in vars(cfg).items() if k != "pack"}, "train_seconds": train_s,
              "model_prior_len": prior_len, "sample_steps": args.steps,
              "sample_seconds": sample_s, "cells": cells, "log": log_lines}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=1))


if __name__ == "__main__":
    main()
