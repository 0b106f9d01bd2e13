"""Issue 24's proof: Wyckoff templates (``generate(enforce_symmetry=True)``) give sound cells on every crystal system.

    python benchmarks/template_soundness.py                     # the committed run: 10 groups x 24, 100 steps, seed 23
    python benchmarks/template_soundness.py --groups 166 148 --num 8 --out /tmp/ts.json   # a quick look

For each space group (one or more per crystal system: triclinic 2, monoclinic 14, orthorhombic 62, tetragonal 139,
trigonal 166 and 148 (rhombohedral lattice) and 164 (hexagonal lattice), hexagonal 194, cubic 225 and 229), ``num``
crystals are sampled with the conditioned bundled model, γ = 2, the reference sampler at ``steps`` steps, ``seed``, one
torch thread, and measured as they come out of the sampler:

* **hits**: spglib (pymatgen ``SpacegroupAnalyzer``, symprec 0.1) finds exactly the asked group (``groups_found``
  lists the others: a supergroup when two orbits draw the same element at positions of higher symmetry);
* **sound**: every pair of atoms (periodic images included) ≥ 0.5 Å apart AND a volume ≥ 5 Å³/atom (the bundled
  train split's densest crystal has 5.77); ``median_volume_per_atom`` (Å³/atom), ``min_distance_min`` (Å);
* **at_separation_floor**: crystals whose nearest pair sits at the templates' push-apart distance
  (``symmetry.MIN_SEPARATION`` = 0.8 Å, ± 0.01): sound by the 0.5 Å rule, but held there by the projection, not
  placed by the network;
* **written** / **readable**: how many the kit writes as CIFs (``outputs.crystal_cif``: its validity check and a
  pymatgen round trip) and how many of those CIFs pymatgen reads back as the same crystal;
  **raw_cif_unreadable**: how many CIFs written unconditionally (the writer before issue 24) pymatgen cannot read back.

Output: a table on stdout and ``--out`` (JSON with the settings, the per-group figures and every crystal's row).

Measured (``benchmarks/results/template_soundness.json`` / ``.txt``, the defaults): 240/240 sound cells, all written and
read back, median 17.6–23.0 Å³/atom per group, 3 crystals with their nearest pair at the 0.8 Å floor; exact hits
202/240 (2, 139, 166, 225, 229: 24/24; 164, 194: 23/24; 148: 13/24, the rest R-3m; 62: 12/24, the rest Cmcm/Imma/...;
14: 11/24, the rest Pnnm/P2_1/m/...: higher-symmetry groups spglib finds at symprec 0.1). The template code before
issue 24 (``template_soundness_before_fix.json``, same settings): 166 17/24 hits, 6/24 sound, median 4.0 Å³/atom,
2 CIFs pymatgen cannot read; 148 7/24 and 18/24; 62 13/24 and 20/24; 14 14/24 and 24/24.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mattergen_kit as mk  # noqa: E402
from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT  # noqa: E402
from mattergen_kit.outputs import crystal_cif  # noqa: E402
from mattergen_kit.sampling.symmetry import MIN_SEPARATION  # noqa: E402

GROUPS = {2: "triclinic", 14: "monoclinic", 62: "orthorhombic", 139: "tetragonal", 166: "trigonal (rhombohedral)",
          148: "trigonal (rhombohedral)", 164: "trigonal (hexagonal P)", 194: "hexagonal", 225: "cubic", 229: "cubic"}
SYMPREC = 0.1
MIN_DISTANCE = 0.5       # Å
MIN_VOLUME_PER_ATOM = 5.0  # Å³/atom
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "template_soundness.json"


def nearest_distance(structure) -> float:
    """The shortest distance between two atoms, periodic images of one atom included (Å)."""
    reduced = structure.get_reduced_structure("LLL")
    shortest_vector = float(min(reduced.lattice.abc))
    if len(structure) == 1:
        return shortest_vector
    pairs = reduced.distance_matrix + np.eye(len(structure)) * 1e9
    return float(min(pairs.min(), shortest_vector))


def space_group(structure) -> int | None:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=SYMPREC).get_space_group_number())
    except Exception:  # noqa: BLE001 - spglib gives up on a collapsed cell: no group found
        return None


def raw_cif_readable(structure) -> bool:
    """Does pymatgen read back the CIF that CifWriter writes for ``structure`` (as the same number of sites)?"""
    from pymatgen.io.cif import CifParser, CifWriter

    try:
        back = CifParser.from_str(str(CifWriter(structure))).parse_structures(primitive=False)
    except Exception:  # noqa: BLE001
        return False
    return len(back) == 1 and len(back[0]) == len(structure)


def measure(structure, group: int) -> dict:
    from pymatgen.core import Structure

    nearest = nearest_distance(structure)
    per_atom = structure.volume / len(structure)
    text, reason = crystal_cif(structure)
    readable = False
    if text is not None:
        try:
            readable = len(Structure.from_str(text, fmt="cif")) == len(structure)
        except Exception:  # noqa: BLE001
            readable = False
    found = space_group(structure)
    return {"formula": structure.composition.reduced_formula, "num_atoms": len(structure),
            "space_group": found, "hit": found == group, "volume_per_atom": round(per_atom, 3),
            "min_distance": round(nearest, 4),
            "sound": bool(nearest >= MIN_DISTANCE and per_atom >= MIN_VOLUME_PER_ATOM),
            "at_separation_floor": bool(abs(nearest - MIN_SEPARATION) <= 0.01),
            "written": text is not None, "rejected_reason": reason, "readable": readable,
            "raw_cif_readable": raw_cif_readable(structure)}


def summarise(rows: list[dict]) -> dict:
    volumes = [r["volume_per_atom"] for r in rows]
    return {"n": len(rows), "hits": sum(r["hit"] for r in rows), "sound": sum(r["sound"] for r in rows),
            "median_volume_per_atom": round(float(np.median(volumes)), 2),
            "min_volume_per_atom": round(float(min(volumes)), 2),
            "min_distance_min": round(float(min(r["min_distance"] for r in rows)), 4),
            "close_pairs_below_0.5A": sum(r["min_distance"] < MIN_DISTANCE for r in rows),
            "at_separation_floor": sum(r["at_separation_floor"] for r in rows),
            "written": sum(r["written"] for r in rows), "readable": sum(r["readable"] for r in rows),
            "raw_cif_unreadable": sum(not r["raw_cif_readable"] for r in rows),
            "groups_found": dict(Counter(str(r["space_group"]) for r in rows).most_common())}


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--groups", type=int, nargs="+", default=list(GROUPS))
    p.add_argument("--num", type=int, default=24, help="crystals per space group (default 24)")
    p.add_argument("--steps", type=int, default=100, help="sampler steps (default 100)")
    p.add_argument("--seed", type=int, default=23, help="seed of every group's run (default 23)")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance γ (default 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model = mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    result = {"settings": {"num_per_group": args.num, "steps": args.steps, "seed": args.seed,
                           "guidance_scale": args.guidance, "sampler": "reference", "symprec": SYMPREC,
                           "sound": f"all atoms >= {MIN_DISTANCE} A apart and >= {MIN_VOLUME_PER_ATOM} A^3/atom",
                           "min_separation": MIN_SEPARATION, "model": BUNDLED_CONDITIONED_CHECKPOINT.name,
                           "torch_threads": 1, "commit": commit(),
                           "command": "python benchmarks/template_soundness.py " + " ".join(argv or sys.argv[1:])},
              "groups": {}, "crystals": {}}
    header = (f"{'group':>5} {'system':<24} {'hits':>5} {'sound':>5} {'med Å³/at':>9} {'min d Å':>8} "
              f"{'floor':>5} {'written':>7} {'readable':>8} {'raw bad':>7} {'s':>5}")
    print(header, flush=True)
    for group in args.groups:
        start = time.perf_counter()
        crystals = model.generate(args.num, seed=args.seed, steps=args.steps, conditions={"space_group": group},
                                  guidance_scale=args.guidance, enforce_symmetry=True, progress=False)
        seconds = time.perf_counter() - start
        rows = [measure(s, group) for s in crystals]
        figures = {"crystal_system": GROUPS.get(group, ""), **summarise(rows), "seconds": round(seconds, 1)}
        result["groups"][str(group)] = figures
        result["crystals"][str(group)] = rows
        n = figures["n"]
        print(f"{group:>5} {figures['crystal_system']:<24} {figures['hits']:>2}/{n:<2} {figures['sound']:>2}/{n:<2} "
              f"{figures['median_volume_per_atom']:>9.1f} {figures['min_distance_min']:>8.3f} "
              f"{figures['at_separation_floor']:>5} {figures['written']:>7} {figures['readable']:>8} "
              f"{figures['raw_cif_unreadable']:>7} {seconds:>5.0f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")   # after every group: a partial run is kept
    total = {k: sum(g[k] for g in result["groups"].values())
             for k in ("n", "hits", "sound", "written", "readable", "raw_cif_unreadable", "at_separation_floor")}
    result["total"] = total
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"total: {total['hits']}/{total['n']} hits, {total['sound']}/{total['n']} sound, {total['written']} written, "
          f"{total['readable']} readable, {total['at_separation_floor']} at the {MIN_SEPARATION} Å floor -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
