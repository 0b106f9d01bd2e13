"""Markdown table comparing the calibrated ML potentials, from the stored calibration runs.

    python benchmarks/potentials_table.py [--n 60]

Reads ``benchmarks/results/calibration_{chgnet,sevennet}_n{N}.json``, written by
``python -m mattergen_kit.evaluation.calibrate --model M --measure --n N [--no-save] > that file``
(same N stable bundled-test + N unstable MPTS-52 crystals for both potentials, leave-one-out bundled hull).
"Accuracy per CPU-second" = stable/unstable accuracy at E_hull ≤ 0.1 eV/atom ÷ mean CPU seconds per relaxation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[20, 60])
    a = p.parse_args(argv)
    print("| potential | N (stable + unstable) | CPU s / relaxation | wall s / relaxation | FIRE steps | "
          "E_f MAE (eV/atom): all / stable / unstable | accuracy at 0.1 | accuracy at 0 | accuracy at 0.1 per CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in a.n:
        for model in ("chgnet", "sevennet"):
            f = RESULTS / f"calibration_{model}_n{n}.json"
            if not f.exists():
                continue
            d = json.loads(f.read_text())
            by = d["e_form_mae_by_set"]
            print(f"| {d['model']} | {d['n_stable_set']} + {d['n_unstable_set']} | "
                  f"{d['relaxation_cpu_seconds_mean']:.2f} | {d['relaxation_seconds_mean']:.2f} | "
                  f"{d['fire_steps_mean']:.1f} | {d['e_form_mae_eV_per_atom']:.3f} / {by['bundled-test']:.3f} / "
                  f"{by['mpts52-unstable']:.3f} | {d['accuracy_stable_at_0.1']:.3f} | {d['accuracy_stable_at_0']:.3f} | "
                  f"{d['accuracy_stable_at_0.1_per_cpu_second']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
