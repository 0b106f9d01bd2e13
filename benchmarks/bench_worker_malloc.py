"""Why relaxation workers tune glibc's allocator (``evaluation.relax.keep_freed_memory``), measured.

    python benchmarks/bench_worker_malloc.py --n 32 --steps 40 --json benchmarks/results/worker_malloc.json

Runs the same batched CHGNet relaxation (the first ``--n`` crystals of the bundled model's GPU samples at 100 steps,
``--steps`` FIRE steps at most, batch = n, 1 thread) in fresh subprocesses, one after the other:

* ``dask_env_untuned``: ``MALLOC_TRIM_THRESHOLD_=65536`` — what Dask's nanny gives its workers — with the tuning off
  (``MATTERGEN_KIT_MALLOC_TUNING=0``): the relaxations as they ran on Dask workers before the tuning;
* ``dask_env_tuned``: the same environment with the tuning (the default);
* ``plain_untuned``: glibc's defaults, tuning off (a plain local process before the tuning).

Prints wall, user and system seconds and minor page faults of the relaxation, and each wall time as a ratio to
``dask_env_tuned``. The machine may be shared: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from mattergen_kit.evaluation.relax import RelaxSettings, structure_key
from mattergen_kit.evaluation.relax_batched import relax_batched
from mattergen_kit.presampled import job_batch, job_by_label
n, steps, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
structures = job_batch(job_by_label(store, "base_1000x100")[1]).to_structures()[:n]
settings = RelaxSettings(steps=steps)
items = [(i, structure_key(s, settings), s.as_dict()) for i, s in enumerate(structures)]
list(relax_batched(items[:2], settings, 2))            # load CHGNet, warm up (not timed)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
results = list(relax_batched(items, settings, len(items)))
r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
print(json.dumps({"wall_s": round(wall, 2), "user_s": round(r1.ru_utime - r0.ru_utime, 2),
                  "sys_s": round(r1.ru_stime - r0.ru_stime, 2), "minor_faults": r1.ru_minflt - r0.ru_minflt,
                  "fire_steps": sum(r.get("n_steps") or 0 for r in results)}))
"""

CASES = {"dask_env_untuned": {"MALLOC_TRIM_THRESHOLD_": "65536", "MATTERGEN_KIT_MALLOC_TUNING": "0"},
         "dask_env_tuned": {"MALLOC_TRIM_THRESHOLD_": "65536"},
         "plain_untuned": {"MATTERGEN_KIT_MALLOC_TUNING": "0"}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--store", default=str(REPO / "benchmarks/results/device_samples_h200.json.gz"))
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    rows = {}
    for name, extra in CASES.items():
        env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TRIM_THRESHOLD_", "MATTERGEN_KIT_MALLOC_TUNING")}
        env.update(extra, OMP_NUM_THREADS="1")
        out = subprocess.run([sys.executable, "-c", CHILD, str(a.n), str(a.steps), a.store], env=env, cwd=REPO,
                             capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, rows[name], flush=True)
    base = rows["dask_env_tuned"]["wall_s"]
    print(f"\n{a.n} crystals, <= {a.steps} FIRE steps, batched CHGNet, 1 thread")
    print(f"{'case':>17} {'wall s':>7} {'user s':>7} {'sys s':>6} {'faults':>10} {'wall / tuned':>12}")
    for name, r in rows.items():
        print(f"{name:>17} {r['wall_s']:>7.1f} {r['user_s']:>7.1f} {r['sys_s']:>6.1f} {r['minor_faults']:>10} "
              f"{r['wall_s'] / base:>12.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"command": "python benchmarks/bench_worker_malloc.py "
                                            + " ".join(argv or sys.argv[1:]), "n": a.n, "steps": a.steps,
                                            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
