"""Issue 13's headline figure: N generated crystals relaxed and judged, end to end, on this machine.

    python benchmarks/bench_evaluate_at_scale.py --num 1000 --steps 100 --workers 2 --batch-size 32 \
        --json benchmarks/results/evaluate_1000_w2_b32.json

Generates ``--num`` crystals with the bundled model (seed 0, ``--steps``; not timed, written to ``--samples`` and
reused by later runs), then times one ``mattergen_kit.evaluate`` call on them with the defaults a user gets
(CHGNet, FIRE fmax 0.1 eV/Å, ≤ 300 steps, bundled DFT hull, novelty against the bundled train split, distribution
metrics, band gaps) plus ``batch_size`` (batched relaxation) and, with ``--workers W > 1``, a Dask ``LocalCluster`` of
W single-thread process workers on 127.0.0.1 (cluster start-up is timed too). Prints minutes in all and per stage, the
relaxation throughput and the load average before and after (other jobs on the 2 cores slow it down).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path


def compare_relaxations(before: str | Path, after: str | Path) -> dict:
    """Agreement of two runs' ``relaxed.jsonl`` on the structures both relaxed: |ΔE| per atom (median, 95th and 99th
    percentile, max, how many above 1 and 10 meV/atom) and the fraction with the same number of FIRE steps."""
    import numpy as np

    from mattergen_kit.evaluation.relax import ResultStore

    def load(path):
        return {k: r for k, r in ResultStore(path).results.items() if r.get("ok")}

    a, b = load(before), load(after)
    keys = [k for k in a if k in b]
    if not keys:
        return {"n_compared": 0}
    de = np.abs([b[k]["energy_per_atom"] - a[k]["energy_per_atom"] for k in keys])
    return {"n_compared": len(keys), "median_abs_dE_eV_per_atom": float(np.median(de)),
            "p95_abs_dE_eV_per_atom": float(np.percentile(de, 95)),
            "p99_abs_dE_eV_per_atom": float(np.percentile(de, 99)), "max_abs_dE_eV_per_atom": float(de.max()),
            "n_above_1meV": int((de > 1e-3).sum()), "n_above_10meV": int((de > 1e-2).sum()),
            "frac_same_n_steps": float(np.mean([a[k]["n_steps"] == b[k]["n_steps"] for k in keys]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100, help="sampler steps of the generated crystals")
    p.add_argument("--samples", default=None, help="folder of the generated crystals (default /tmp/mgk_scale_NUMxSTEPS)")
    p.add_argument("--presampled", default=None, metavar="STORE",
                   help="take the crystals from a store of tools/sample_on_device.py (the bundled model's job "
                        "base_NUMxSTEPS, drawn on a lent GPU) instead of generating them here")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="evaluation folder (default: a fresh temporary folder)")
    p.add_argument("--json", default=None)
    p.add_argument("--compare", default=None, metavar="RELAXED_JSONL",
                   help="a previous run's relaxed.jsonl (same crystals): print how far this run's relaxed energies "
                        "are from it (e.g. before and after a change to the relaxation code)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import mattergen_kit as mk
    from mattergen_kit.outputs import generate_to_folder

    samples = Path(args.samples or f"/tmp/mgk_scale_{args.num}x{args.steps}")
    if args.presampled and not (samples / "manifest.json").is_file():
        from mattergen_kit.outputs import atomic_write_text, extxyz_text
        from mattergen_kit.presampled import job_batch, job_by_label

        label = f"base_{args.num}x{args.steps}"
        try:
            _, job = job_by_label(args.presampled, label)
        except KeyError as err:
            raise SystemExit(f"{args.presampled}: {err.args[0]}") from None
        structures = job_batch(job).to_structures()
        samples.mkdir(parents=True, exist_ok=True)
        atomic_write_text(samples / "generated_crystals.extxyz",
                          extxyz_text(structures, [f"gen_{i:05d}" for i in range(len(structures))]))
        (samples / "manifest.json").write_text(json.dumps({"source": args.presampled, "job": label,
                                                           "device": job["device"]}))
    if not (samples / "manifest.json").is_file():
        print(f"generating {args.num} crystals ({args.steps} steps, seed 0) into {samples} (not timed)", flush=True)
        generate_to_folder(mk.load_model(), samples, args.num, seed=0, steps=args.steps, overwrite=True,
                              picture=False, progress=False)
    load_before = os.getloadavg()[0]
    out = args.out or tempfile.mkdtemp(prefix="mgk_scale_eval_")
    start = time.perf_counter()
    cluster = None
    if args.workers > 1:
        from dask.distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
    try:
        report = mk.evaluate(samples / "generated_crystals.extxyz", out=out, batch_size=args.batch_size,
                             cluster=cluster, progress=True)
    finally:
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - start
    summary = report.summary
    row = {"command": "python benchmarks/bench_evaluate_at_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "num": args.num, "sampler_steps": args.steps, "samples": str(args.presampled or "generated here"), "workers": args.workers, "batch_size": args.batch_size,
           "minutes": round(seconds / 60, 2), "structures_per_s": round(args.num / seconds, 3),
           "stage_seconds": summary.get("seconds"), "loadavg_1min_before": round(load_before, 2),
           "loadavg_1min_after": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
           "stability": summary.get("stability"), "sun": summary.get("sun"), "rmsd": summary.get("rmsd"),
           "relax_converged": summary.get("relax_converged")}
    if args.compare:
        row["compared_with"] = {"path": args.compare, **compare_relaxations(args.compare, Path(out) / "relaxed.jsonl")}
    print(json.dumps(row, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
