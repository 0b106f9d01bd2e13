"""Cost of each evaluation stage on this machine, extrapolated to 1,000 structures, and a full report on bundled
test crystals.

    python benchmarks/bench_evaluation.py --n-stage 20 --n-full 300 --out runs/bench_evaluation

Stages are timed on ``n-stage`` "generated-like" structures: bundled test crystals strained by up to ±5 % and
rattled by 0.1 Å, so the relaxation has real work to do (DFT-relaxed inputs converge in a few steps and would
flatter the numbers). Threads: BLAS 1, torch 1 (evaluate()'s defaults).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def _timeit(fn, items):
    t = time.perf_counter()
    out = [fn(x) for x in items]
    return (time.perf_counter() - t) / max(1, len(items)), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n-stage", type=int, default=20)
    p.add_argument("--n-full", type=int, default=300)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--max-reference-fingerprints", type=int, default=500)
    p.add_argument("--out", default="runs/bench_evaluation")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    from threadpoolctl import threadpool_limits

    from mattergen_kit.evaluation import evaluate
    from mattergen_kit.evaluation.distribution import composition_fingerprint, structure_fingerprint
    from mattergen_kit.evaluation.evaluate import _hull_singleton
    from mattergen_kit.evaluation.hull import ElementalReferences
    from mattergen_kit.evaluation.matching import ReferenceIndex, unique_mask
    from mattergen_kit.evaluation.properties import band_gap_predictor, hhi, spacegroup
    from mattergen_kit.evaluation.reference import bundled
    from mattergen_kit.evaluation.relax import RelaxSettings, relax_one
    from mattergen_kit.evaluation.validity import check_structure

    rng = np.random.default_rng(0)
    te, tr = bundled("test"), bundled("train")
    idx = rng.choice(len(te), a.n_stage, replace=False)
    gen = []
    for i in idx:
        s = te.structures[i].copy()
        s.apply_strain(rng.uniform(-0.05, 0.05, 3))
        s.perturb(0.1)
        gen.append(s)
    res: dict = {"n_stage": a.n_stage, "mean_atoms": float(np.mean([len(s) for s in gen]))}
    with threadpool_limits(limits=1):
        res["validity_s"], _ = _timeit(check_structure, gen)
        t = time.perf_counter()
        unique_mask(gen + gen[:5])
        res["uniqueness_s"] = (time.perf_counter() - t) / (len(gen) + 5)
        t = time.perf_counter()
        index = ReferenceIndex(tr.structures)
        res["novelty_index_build_s_once"] = time.perf_counter() - t
        res["novelty_s"], _ = _timeit(index.match, gen)
        settings = RelaxSettings(steps=a.steps)
        relax_one((0, "warm", gen[0].as_dict()), settings)  # load the model once
        t = time.perf_counter()
        rel = [relax_one((k, str(k), s.as_dict()), settings) for k, s in enumerate(gen)]
        res["relaxation_s"] = (time.perf_counter() - t) / len(gen)
        res["relaxation_mean_steps"] = float(np.mean([r["n_steps"] for r in rel]))
        res["relaxation_failed"] = int(sum(not r["ok"] for r in rel))
        refs, hull = ElementalReferences.load(), _hull_singleton()
        from pymatgen.core import Structure

        finals = [Structure.from_dict(r["relaxed"]) for r in rel if r["ok"]]
        energies = [r["energy"] for r in rel if r["ok"]]
        t = time.perf_counter()
        for s, e in zip(finals, energies):
            hull.e_above_hull(s.composition, refs.formation_energy_per_atom(s.composition, e, s))
        res["hull_s"] = (time.perf_counter() - t) / max(1, len(finals))
        res["crystalnn_fingerprint_s"], _ = _timeit(structure_fingerprint, gen)
        res["magpie_fingerprint_s"], _ = _timeit(lambda s: composition_fingerprint(s.composition), gen)
        res["spacegroup_s"], _ = _timeit(spacegroup, gen)
        res["hhi_s"], _ = _timeit(lambda s: hhi(s.composition), gen)
        bg = band_gap_predictor()
        res["band_gap_s"], _ = _timeit(lambda s: bg.predict([s.composition]), gen)
    per = sum(v for k, v in res.items() if k.endswith("_s"))
    res["total_per_structure_s"] = per
    res["extrapolated_1000_structures_min"] = (per * 1000 + res["novelty_index_build_s_once"]) / 60
    res["band_gap_model"] = bg.metrics
    print(json.dumps(res, indent=1))

    # ------------------------------------------------------------------ full report on bundled test crystals
    if a.n_full > 0:
        sub = [te.structures[i] for i in np.sort(rng.choice(len(te), a.n_full, replace=False))]
        t = time.perf_counter()
        rep = evaluate(sub, reference="bundled-train", relax=True, steps=a.steps, out=a.out,
                       max_reference_fingerprints=a.max_reference_fingerprints)
        wall = time.perf_counter() - t
        summary = {k: v for k, v in rep.summary.items()}
        summary["wall_seconds"] = wall
        print(json.dumps(summary, indent=1, default=str))
        Path(a.out, "bench_stages.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
