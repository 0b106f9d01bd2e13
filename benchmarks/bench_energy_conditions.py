"""The two trained-but-unmeasured conditions of the conditioned bundled model, judged on the hull ``mp20+mpfe``
(issue 26): ``e_above_hull`` and ``formation_energy_per_atom``, 64 crystals per (target, γ), relaxed with batched
CHGNet and evaluated; the row records the median relaxed E_hull / formation energy against the target (resumable:
rows are appended to ``--out/rows.jsonl`` and skipped on a rerun).

    OMP_NUM_THREADS=1 python benchmarks/bench_energy_conditions.py --out /tmp/step7 --num 64 --steps 100

"unmoved" median = the γ = 0 (unconditional) median; "moved halfway" = |median − target| ≤ |unmoved − target| / 2.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mattergen_kit.evaluation import evaluate
from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT, load_model

POINTS = [("e_above_hull", 0.0, 0.0), ("e_above_hull", 0.0, 2.0), ("e_above_hull", 0.0, 4.0),
          ("e_above_hull", 0.0, 1.0), ("formation_energy_per_atom", -2.5, 2.0),
          ("formation_energy_per_atom", -2.5, 4.0), ("formation_energy_per_atom", -2.5, 1.0),
          ("e_above_hull", 0.1, 2.0), ("formation_energy_per_atom", -0.5, 2.0),
          ("e_above_hull", 0.1, 1.0), ("e_above_hull", 0.1, 4.0), ("formation_energy_per_atom", -0.5, 1.0),
          ("formation_energy_per_atom", -0.5, 4.0)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/energy_conditions")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    done = {(r["property"], r["target"], r["gamma"]) for r in map(json.loads, rows_file.read_text().splitlines())} \
        if rows_file.exists() else set()
    model = load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    for prop, target, gamma in POINTS:
        if (prop, target, gamma) in done:
            continue
        t = time.perf_counter()
        conditions = {prop: target} if gamma > 0 else None
        crystals = model.generate(a.num, seed=0, steps=a.steps, conditions=conditions,
                                  guidance_scale=gamma if gamma > 0 else 0.0, progress=False)
        t_sample = time.perf_counter() - t
        rep = evaluate(crystals, out=out / f"{prop}_{target}_g{gamma:g}", distribution=False, band_gap=False,
                       progress=False, batch_size=32)
        df = rep.per_structure
        eh = pd.to_numeric(df.get("e_above_hull"), errors="coerce")
        ef = pd.to_numeric(df.get("e_form_per_atom"), errors="coerce")
        row = {"property": prop, "target": target, "gamma": gamma, "n": len(df), "n_relaxed": int(eh.notna().sum()),
               "median_e_above_hull": float(eh.median()), "median_e_form_per_atom": float(ef.median()),
               "stability": rep.summary.get("stability"), "sun": rep.summary.get("sun"),
               "n_suspect": rep.summary.get("n_suspect"), "hull": rep.summary.get("hull"),
               "potential": "CHGNet 0.3.0", "sampler_steps": a.steps, "seed": 0,
               "sample_seconds": round(t_sample, 1), "total_seconds": round(time.perf_counter() - t, 1)}
        with open(rows_file, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
