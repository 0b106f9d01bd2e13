"""Seconds per relaxation and per static single point of CHGNet and SevenNet on this machine, same process.

    nice -n 10 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/bench_potentials_speed.py [--n 6] [--l3i5]

Relaxation: the first ``n`` bundled test crystals, each rattled (0.1 Å, seed 0) and strained 3 %, FIRE to
fmax 0.1 eV/Å with the cell relaxed (FrechetCellFilter), ≤ 300 steps, one torch thread — the settings of
``evaluate(relax=True)``. Static: 10 bundled train crystals, energy + forces + stress of the structure as given.
Wall seconds depend on how busy the machine is; ``cpu_s`` (this process's CPU time, one thread) does much less.
Prints one JSON line per potential (and writes them to ``benchmarks/results/potentials_speed.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def _structures(n: int):
    from mattergen_kit.datasets import load_bundled

    test = load_bundled("test", progress=False).structures[:n]
    np.random.seed(0)  # pymatgen's perturb draws from numpy's global generator
    out = []
    for s in test:
        s = s.copy()
        s.perturb(0.1)
        s.apply_strain(0.03)
        out.append(s)
    return out, load_bundled("train", progress=False).structures[:10]


def main(argv=None) -> int:
    import torch

    from mattergen_kit.evaluation.relax import RelaxSettings, _threads, relax_one

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--l3i5", action="store_true", help="also time SevenNet-l3i5 relaxations (slow)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rattled, static = _structures(a.n)
    out_file = Path(__file__).parent / "results" / "potentials_speed.jsonl"
    variants = [("chgnet", None), ("sevennet", "7net-0"), ("sevennet", "7net-l3i5")]
    for model, variant in variants:
        from mattergen_kit.evaluation import relax as relax_mod

        if model == "sevennet":
            from sevenn.calculator import SevenNetCalculator

            relax_mod._POTENTIALS[("sevennet", None)] = SevenNetCalculator(variant, device="cpu")  # warm, chosen
        pot = relax_mod.load_potential(model)
        calc = pot.calculator if model == "chgnet" else pot
        from pymatgen.io.ase import AseAtomsAdaptor

        t, c = time.perf_counter(), time.process_time()
        with _threads(1):
            for s in static:
                atoms = AseAtomsAdaptor.get_atoms(s)
                atoms.calc = calc
                atoms.get_potential_energy()
                atoms.get_stress()
        row = {"model": model, "variant": variant or "chgnet-0.3.0",
               "static_s_per_structure": round((time.perf_counter() - t) / len(static), 3),
               "static_cpu_s_per_structure": round((time.process_time() - c) / len(static), 3)}
        if model != "sevennet" or variant == "7net-0" or a.l3i5:
            res = [relax_one((i, str(i), s.as_dict()), RelaxSettings(model=model)) for i, s in enumerate(rattled)]
            row.update(n_relaxations=len(res), ok=sum(r["ok"] for r in res),
                       s_per_relaxation=round(float(np.mean([r["seconds"] for r in res])), 2),
                       cpu_s_per_relaxation=round(float(np.mean([r["cpu_seconds"] for r in res])), 2),
                       fire_steps_mean=round(float(np.mean([r["n_steps"] for r in res])), 1))
            row["cpu_s_per_fire_step"] = round(row["cpu_s_per_relaxation"] / max(row["fire_steps_mean"], 1), 3)
        row["date"] = time.strftime("%Y-%m-%d %H:%M")
        print(json.dumps(row), flush=True)
        with open(out_file, "a") as f:
            f.write(json.dumps(row) + "\n")
        relax_mod._POTENTIALS.pop((model, None), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
