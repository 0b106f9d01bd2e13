"""How to merge the MP-20 phases with the Materials Project formation energies into one hull (issue 26).

    python benchmarks/bench_hull_merge.py --n 1500 --json benchmarks/results/hull_merge_policy.json

The two snapshots share 18,479 material ids whose formation energies differ by a median 0.0006 eV/atom but with
tails (5th–95th percentile −0.10…+0.07: MP's correction scheme changed between them). Three rules are compared, each
a table of phases for :class:`~mattergen_kit.evaluation.hull.ConvexHull`:

* ``prefer_mp20``: one entry per id, the MP-20 value where both have it (what ``"mp20+mpfe"`` ships);
* ``prefer_mpfe``: one entry per id, the MP formation energy where both have it;
* ``keep_both``: both values of a shared id as two entries (the lower wins on the hull).

Measured on ``n`` MP-20 ground states (MP e_above_hull = 0) that both snapshots hold: E_hull of each at its MP-20
formation energy and at its MP formation energy against each merged hull; the share more than 0.05 eV/atom below
(a known ground state below the hull: the hull is too high there) and above (a ground state pushed off the hull).
The ML formation energies the kit computes are on the MP-20 footing (elemental references fitted to bundled MP-20
formation energies), so the MP-20 rows are the ones that matter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd

from mattergen_kit.evaluation.hull import ConvexHull
from mattergen_kit.evaluation.reference import hull_reference_table, load_mp_formation_energies


def tables() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    old = hull_reference_table()
    fe = load_mp_formation_energies()
    fe_only = fe[~fe["material_id"].isin(set(old["material_id"]))]
    fe_shared = fe[fe["material_id"].isin(set(old["material_id"]))]
    prefer_mp20 = pd.concat([old, fe_only], ignore_index=True)
    fe_map = dict(zip(fe["material_id"], fe["formation_energy_per_atom"]))
    prefer_mpfe = prefer_mp20.copy()
    shared = prefer_mpfe["material_id"].isin(fe_map)
    prefer_mpfe.loc[shared, "formation_energy_per_atom"] = prefer_mpfe.loc[shared, "material_id"].map(fe_map)
    keep_both = pd.concat([old, fe_shared.assign(material_id=fe_shared["material_id"] + "#mpfe"), fe_only],
                          ignore_index=True)
    return old, fe, {"mp20 (old hull)": old, "prefer_mp20": prefer_mp20, "prefer_mpfe": prefer_mpfe,
                     "keep_both": keep_both}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1500, help="ground states to test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    old, fe, rules = tables()
    fe_map = dict(zip(fe["material_id"], fe["formation_energy_per_atom"]))
    phases = old[old["source"] == "mp20_phases"]
    ground = phases[(phases["e_above_hull"] == 0) & phases["material_id"].isin(fe_map)]
    pick = ground.iloc[np.sort(np.random.default_rng(a.seed).choice(len(ground), min(a.n, len(ground)),
                                                                    replace=False))]
    out = {"command": "python benchmarks/bench_hull_merge.py " + " ".join(argv or sys.argv[1:]),
           "n_ground_states": int(len(pick)), "n_shared_ids": int(len(set(fe_map) & set(old["material_id"]))),
           "rules": {}}
    for name, table in rules.items():
        t = time.perf_counter()
        hull = ConvexHull(table)
        row = {"n_phases": int(len(table))}
        for which in ("mp20", "mpfe"):
            eh = np.array([hull.e_above_hull(r.composition, r.formation_energy_per_atom if which == "mp20"
                                             else fe_map[r.material_id]) for r in pick.itertuples()])
            row[f"at_{which}_energy"] = {"below_-0.05": float(np.mean(eh < -0.05)),
                                         "above_+0.05": float(np.mean(eh > 0.05)),
                                         "median": float(np.median(eh)), "p1": float(np.percentile(eh, 1)),
                                         "p99": float(np.percentile(eh, 99))}
        row["seconds"] = round(time.perf_counter() - t, 1)
        out["rules"][name] = row
        print(name, json.dumps(row), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
