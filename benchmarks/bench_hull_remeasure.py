"""Stability and S.U.N. re-measured on the default hull ``mp20+mpfe`` beside the old ``mp20`` hull (issue 26), reusing
stored relaxations: nothing already relaxed is relaxed again.

    python benchmarks/bench_hull_remeasure.py --base-out /tmp/remeasure/base256 --demo-report /tmp/report \\
        --json benchmarks/results/hull_remeasure.json

* ``base``: the shipped base model's first 256 of its 1,000 samples at 1000 steps (``device_samples_h200.json.gz``,
  job ``base_1000x1000``; the model card's protocol) through ``evaluate`` with ``out=--base-out`` — its
  ``relaxed.jsonl`` (batched CHGNet, 1 thread, written by the first run) is reused, so only the judging reruns;
* ``conditioning``: every ``benchmarks/results/conditioning/relax/<point>/per_structure.csv`` (the proof's 256
  relaxed samples per point): E_hull recomputed from each row's stored CHGNet formation energy and formula against
  both hulls; S.U.N. here = stable ∧ unique ∧ novel vs the train split ∧ composition unknown to MP (the CSVs hold no
  structures, so the bundled-structure match is not redone);
* ``demo``: the summary of ``mattergen-kit evaluate`` on the demo's 32 crystals (``--demo-report``).

Every row states hull, potential (CHGNet 0.3.0, FIRE fmax 0.1 eV/Å ≤ 300 steps), threshold (E_hull ≤ 0.1 eV/atom;
suspects below −0.1 not counted on the new hull) and sample count.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mattergen_kit.evaluation import evaluate
from mattergen_kit.evaluation.hull import ConvexHull
from mattergen_kit.evaluation.reference import hull_table, known_compositions
from mattergen_kit.presampled import job_batch, job_by_label

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "benchmarks/results/device_samples_h200.json.gz"
CONDITIONING = REPO / "benchmarks/results/conditioning/relax"
KEYS = ("n", "stability", "stability_0", "n_suspect", "sun", "sun_new_structure", "novelty",
        "novelty_vs_bundled_structures", "novelty_composition", "stability_mp20", "sun_mp20", "mean_e_above_hull")


def base(out: Path, num: int = 256) -> dict:
    _, job = job_by_label(STORE, "base_1000x1000")
    structures = job_batch(job).to_structures()[:num]
    report = evaluate(structures, out=out, distribution=False, band_gap=False, progress=False, batch_size=32)
    row = {k: report.summary.get(k) for k in KEYS}
    row["per_structure"] = report.table.assign(e_form_per_atom=report.per_structure.get("e_form_per_atom"))
    return row


def conditioning(old: ConvexHull, new: ConvexHull) -> list[dict]:
    known = known_compositions()
    rows = []
    for folder in sorted(CONDITIONING.iterdir()):
        df = pd.read_csv(folder / "per_structure.csv")
        n = len(df)
        ef = pd.to_numeric(df["e_form_per_atom"], errors="coerce")
        ok = ef.notna() & df["formula"].notna()
        eh_old = pd.Series(np.nan, index=df.index)
        eh_new = pd.Series(np.nan, index=df.index)
        for i in df.index[ok]:
            eh_old[i] = old.e_above_hull(df.at[i, "formula"], ef[i])
            eh_new[i] = new.e_above_hull(df.at[i, "formula"], ef[i])
        unique = df["unique"].fillna(False).astype(bool)
        novel = df["novel"].fillna(False).astype(bool)
        new_comp = ~df["formula"].isin(set(known))
        suspect = eh_new < -0.1
        stable_new = (eh_new <= 0.1) & ~suspect
        stable_old = eh_old <= 0.1
        rows.append({"point": folder.name, "n": n,
                     "published_stability": json.loads((folder / "summary.json").read_text()).get("stability"),
                     "stability_mp20": float(stable_old.sum() / n), "sun_mp20": float((stable_old & unique & novel).sum() / n),
                     "stability": float(stable_new.sum() / n), "n_suspect": int(suspect.sum()),
                     "n_suspect_on_mp20": int((eh_old < -0.1).sum()),
                     "sun": float((stable_new & unique & novel & new_comp).sum() / n),
                     "sun_new_structure": float((stable_new & unique & novel).sum() / n)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-out", default="/tmp/remeasure/base256")
    p.add_argument("--base-num", type=int, default=256)
    p.add_argument("--demo-report", default=None, help="an evaluate --out folder of the demo's 32 crystals")
    p.add_argument("--json", default=None)
    p.add_argument("--csv", default=None, help="per-structure table of the base rows")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    h = hull_table()
    out = {"command": "python benchmarks/bench_hull_remeasure.py " + " ".join(argv or sys.argv[1:]),
           "hull": h.name, "hull_sources": h.counts, "old_hull": "mp20 (MP-20 phases + bundled structures)",
           "potential": "CHGNet 0.3.0, FIRE fmax 0.1 eV/A, <= 300 steps, fitted elemental references",
           "threshold": "stable: E_hull <= 0.1 eV/atom; new hull: suspects (E_hull < -0.1) not counted; old hull: "
                        "counted, as published"}
    row = base(Path(a.base_out), a.base_num)
    table = row.pop("per_structure")
    out["base"] = dict(row, samples="mp_bundled_20.npz, first 256 of 1,000 samples at 1000 steps (seed 0, H200 draw)")
    print(json.dumps(out["base"]), flush=True)
    if a.csv:
        table.to_csv(a.csv, index=False, float_format="%.4f")
    out["conditioning"] = conditioning(ConvexHull("mp20"), ConvexHull())
    if a.demo_report:
        s = json.loads((Path(a.demo_report) / "summary.json").read_text())
        out["demo"] = {k: s.get(k) for k in KEYS}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
