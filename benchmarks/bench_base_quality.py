"""The base-model quality table of issue 9 for one model: sample, judge, relax a subset.

    python benchmarks/bench_base_quality.py --model PATH --tag v2 --num 1000 --steps 100 --relax-n 256 --workers 2

1. Sampling: ``--num`` crystals, seed 0, with ``--workers`` processes that each take every k-th batch of 64
   (``GenerativeModel.iter_batches(skip=...)``: a batch's seed depends only on the run's seed and its offset,
   so the crystals are identical to one process sampling them all). Batches are written as they finish
   (``benchmarks/results/quality_<tag>/batch_<start>.json``) and a rerun skips finished ones.
2. Judging all crystals (no relaxation): structural validity, SMACT, uniqueness, novelty against the bundled
   train split, mean number of distinct elements (train split: 2.9) and the share with ≥ 5, Wasserstein
   distances of density, #elements and #atoms to the bundled test split.
3. Relaxing the first ``--relax-n`` with CHGNet (``evaluate(relax=True)``, ``--workers`` processes): RMSD
   generated → relaxed, stability (E_hull ≤ 0.1 eV/atom on the bundled hull, a CHGNet screening estimate),
   S.U.N.
Prints the table and writes ``benchmarks/results/quality_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 64


def _sample_shard(args_tuple) -> None:
    model_path, num, steps, tau, seed, shard, workers, folder = args_tuple
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    import mattergen_kit as mk

    model = mk.load_model(model_path)
    starts = list(range(0, num, BATCH))
    mine = starts[shard::workers]
    skip = [s for s in starts if s not in mine or (folder / f"batch_{s:06d}.json").exists()]
    for start, batch, _ in model.iter_batches(num, seed=seed, steps=steps, batch_size=BATCH, skip=skip,
                                           type_temperature=tau, progress=False):
        rows = [s.as_dict() for s in batch.to_structures()]
        tmp = folder / f"batch_{start:06d}.json.tmp"
        tmp.write_text(json.dumps(rows))
        tmp.replace(folder / f"batch_{start:06d}.json")
        print(f"  shard {shard}: batch {start} done", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--tag", required=True)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--type-temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--relax-n", type=int, default=256)
    args = p.parse_args(argv)

    from pymatgen.core import Structure

    import mattergen_kit as mk
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.evaluation.distribution import _basic_stats, wasserstein_metrics

    model = mk.load_model(args.model)
    tau = args.type_temperature if args.type_temperature is not None else float(model.meta.get("type_temperature", 1.0))
    folder = HERE / "results" / f"quality_{args.tag}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(args.model, args.num, args.steps, tau, args.seed, k, args.workers, folder) for k in range(args.workers)]
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers) as pool:
            pool.map(_sample_shard, jobs)
    else:
        _sample_shard(jobs[0])
    sample_seconds = time.perf_counter() - t0
    structures = [Structure.from_dict(d) for f in sorted(folder.glob("batch_*.json")) for d in json.loads(f.read_text())]
    assert len(structures) == args.num, f"{len(structures)} crystals in {folder}, expected {args.num}"

    report = mk.evaluate(structures, reference="bundled-train", relax=False, distribution=False, properties=False,
                         band_gap=False, progress=False)
    s = report.summary
    n_el = np.array([len(x.composition) for x in structures])
    train_n_el = np.array([len(x.composition) for x in load_bundled("train", progress=False).structures])
    row = {"tag": args.tag, "model": str(model.path), "global_step": model.meta.get("global_step"),
           "num": args.num, "steps": args.steps, "type_temperature": tau, "seed": args.seed,
           "sample_seconds": sample_seconds, "workers": args.workers,
           "structural_validity": s["structural_validity"], "compositional_validity": s["compositional_validity"],
           "uniqueness": s["uniqueness"], "novelty": s["novelty"],
           "mean_n_elements": float(n_el.mean()), "train_mean_n_elements": float(train_n_el.mean()),
           "share_ge5_elements": float((n_el >= 5).mean()), "train_share_ge5_elements": float((train_n_el >= 5).mean())}
    row.update(wasserstein_metrics(structures, _basic_stats(load_bundled("test", progress=False).structures)))
    if args.relax_n:
        t1 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.workers) as pool:
            relaxed = mk.evaluate(structures[: args.relax_n], reference="bundled-train", relax=True,
                                  out=folder / "relaxation", distribution=False, properties=False, band_gap=False,
                                  map_fn=lambda func, items: pool.map(func, list(items), chunksize=1), progress=True)
        r = relaxed.summary
        row.update({"relax_n": args.relax_n, "rmsd": r["rmsd"], "stability": r["stability"], "sun": r["sun"],
                    "mean_e_above_hull": r.get("mean_e_above_hull"), "relax_converged": r.get("relax_converged"),
                    "relax_seconds": time.perf_counter() - t1})
    (HERE / "results" / f"quality_{args.tag}.json").write_text(json.dumps(row, indent=1))
    for key, value in row.items():
        print(f"{key:>26}: {value:.4f}" if isinstance(value, float) else f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
