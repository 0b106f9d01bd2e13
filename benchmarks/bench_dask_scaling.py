"""Speed-up of relaxations spread over a Dask LocalCluster: 1 worker vs. 2 workers on this machine.

    python benchmarks/bench_dask_scaling.py --n 16 --steps 300 --json benchmarks/results/dask_scaling.json

The same ``n`` generated crystals (the bundled model's shipped samples, else rattled bundled test crystals; see
bench_relax_batched.py) are relaxed by ``relax_structures(map_fn=dask_map(client))`` on a LocalCluster of 1 and then
2 process workers (1 thread each, 127.0.0.1); ``--batch-size B`` makes each task relax B structures together
(:mod:`mattergen_kit.evaluation.relax_batched`). Cluster start-up and each worker's CHGNet load are not timed (a warm-up
task per worker loads it). speed-up = t(1 worker) / t(2 workers); linear would be 2.0. On a machine where other jobs
hold cores, the speed-up is bounded by the free cores: the load average is printed with the figures.
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


def _warm():
    import warnings

    warnings.filterwarnings("ignore")
    from mattergen_kit.evaluation.relax import load_potential

    load_potential("chgnet")
    return os.getpid()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--samples", default=None)
    p.add_argument("--batch-size", type=int, default=1,
                   help="structures per task, relaxed together by the batched path (default 1: one per task)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    from distributed import Client, LocalCluster

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_relax_batched import DEFAULT_SAMPLES, load_inputs

    from mattergen_kit.evaluation.cluster import dask_map
    from mattergen_kit.evaluation.relax import RelaxSettings, relax_structures

    structures, source = load_inputs(a.n, None if a.samples == "rattled" else Path(a.samples or DEFAULT_SAMPLES))
    settings = RelaxSettings(steps=a.steps)
    res = {"command": "python benchmarks/bench_dask_scaling.py " + " ".join(argv or sys.argv[1:]), "n": len(structures),
           "source": source, "steps": a.steps, "batch_size": a.batch_size, "workers": {}}
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as cluster, \
                Client(cluster) as client, tempfile.TemporaryDirectory() as tmp:
            client.run(_warm)
            load0 = os.getloadavg()[0]
            t = time.perf_counter()
            out = relax_structures(structures, settings, store=Path(tmp) / "relaxed.jsonl", progress=False,
                                   map_fn=dask_map(client), batch_size=a.batch_size)
            dt = time.perf_counter() - t
            res["workers"][n_workers] = {"seconds": round(dt, 1), "structures_per_s": round(len(structures) / dt, 4),
                                         "ok": sum(bool(r and r["ok"]) for r in out),
                                         "loadavg_1min_before": round(load0, 2),
                                         "loadavg_1min_after": round(os.getloadavg()[0], 2)}
            print(f"{n_workers} worker(s): {dt:.1f} s for {len(structures)} structures "
                  f"({len(structures) / dt:.3f}/s), load average {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    res["speedup_2_vs_1"] = round(res["workers"][1]["seconds"] / res["workers"][2]["seconds"], 2)
    print(f"speed-up 1 -> 2 workers: {res['speedup_2_vs_1']}x (linear: 2.0); {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
