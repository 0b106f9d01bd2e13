"""Cold start of ``evaluate``: how long the first call on a fresh clone spends building its caches.

    python benchmarks/bench_cold_start.py --repo /tmp/cold --n 2 [--json benchmarks/results/cold_start.json]

Runs ``evaluate`` on ``n`` generated crystals (the bundled model's shipped samples, or rattled bundled test
crystals) twice, each in a fresh Python process with ``MATTERGEN_KIT_CACHE`` pointing to the same initially
**empty** folder and the package imported from ``--repo`` (a fresh ``git clone``):

* cold = the first run (every cache is built), warm = the second run (every cache is read);
* **setup = cold − warm**: what the first call spends on derived data (bundled tensors, reference
  fingerprints, phases table, hull, band-gap model), independent of how long the crystals themselves take.

The stderr ``building ... / built ... in s`` lines of each cache are collected into the JSON as well.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time, warnings, json
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from mattergen_kit.evaluation import evaluate
from pymatgen.core import Structure
structs = [Structure.from_file(p) for p in sys.argv[2:]]
r = evaluate(structs, out=sys.argv[1], progress=False, steps=int(__import__('os').environ.get('BENCH_STEPS', '300')))
print("RESULT", json.dumps({"wall_s": time.perf_counter() - t0, "stages_s": r.summary["seconds"],
                            "n": r.summary["n"]}))
"""


def run_once(repo: Path, cache: Path, files: list[str], out: Path, steps: int) -> dict:
    env = dict(os.environ, MATTERGEN_KIT_CACHE=str(cache), PYTHONPATH=str(repo), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", BENCH_STEPS=str(steps))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, str(out), *files], cwd=repo, env=env, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"evaluate failed (rc {p.returncode}):\n{p.stderr[-3000:]}")
    res = json.loads(next(line for line in p.stdout.splitlines() if line.startswith("RESULT"))[7:])
    res["process_wall_s"] = wall
    res["builds"] = [{"what": m.group(1), "seconds": float(m.group(2))}
                     for m in re.finditer(r"built (.+?) in ([0-9.]+) s", p.stderr)]
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="a fresh clone of the repository (imported via PYTHONPATH)")
    p.add_argument("--n", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--samples", default=None, help="folder of CIFs to evaluate (default: the repo's shipped samples)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    repo = Path(a.repo).resolve()
    samples = Path(a.samples) if a.samples else None
    if samples is None:
        from glob import glob
        cands = sorted(glob(str(repo / "benchmarks/results/**/*.cif"), recursive=True))
        if not cands:
            raise SystemExit("no CIFs found: pass --samples FOLDER")
        files = cands[: a.n]
    else:
        files = sorted(str(f) for f in samples.glob("*.cif"))[: a.n]
    with tempfile.TemporaryDirectory(prefix="cold-cache-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        cold = run_once(repo, cache, files, Path(tmp) / "out1", a.steps)
        warm = run_once(repo, cache, files, Path(tmp) / "out2", a.steps)
    setup = cold["process_wall_s"] - warm["process_wall_s"]
    res = {"command": "python benchmarks/bench_cold_start.py " + " ".join(argv or sys.argv[1:]),
           "n_structures": len(files), "cold_s": round(cold["process_wall_s"], 1),
           "warm_s": round(warm["process_wall_s"], 1), "setup_s": round(setup, 1), "cold": cold, "warm": warm}
    print(f"cold first evaluate: {res['cold_s']} s, warm: {res['warm_s']} s -> setup {res['setup_s']} s "
          f"({len(files)} structures)")
    for b in cold["builds"]:
        print(f"  built {b['what']}: {b['seconds']:.1f} s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
