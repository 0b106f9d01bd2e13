"""Sampling throughput and sample quality of a model, at the reference 1000 steps and at fewer steps.

    python benchmarks/bench_generation.py --num 256 --steps 1000 --seed 0          # the quality targets
    python benchmarks/bench_generation.py --num 64 --steps 1000,200,100,50 --seed 0  # steps vs validity
    python benchmarks/bench_generation.py --num 256 --steps 100 --type-temperature 1,0.7,0.5 --novelty
    python benchmarks/bench_generation.py --num 256 --steps 100 --remask-rate 0,2,4,8 --novelty

For every step count it prints: crystals/s, structural validity (all periodic distances ≥ 0.5 Å,
volume ≥ 0.1 Å³), SMACT compositional validity, uniqueness (StructureMatcher ltol 0.2, stol 0.3,
angle_tol 5), and the Wasserstein distances of density, number of elements and number of atoms to the
bundled test split, the mean number of distinct elements per cell and the share with ≥ 5 (train split:
2.9 and 0.7 %), and with --novelty the share not matching any bundled train crystal. Results are appended to benchmarks/results/generation.jsonl, samples written as CIFs.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def quality(structures, reference_stats, train_index=None) -> dict:
    from mattergen_kit.evaluation import smact_validity, structural_validity, unique_mask
    from mattergen_kit.evaluation.distribution import wasserstein_metrics

    struct_ok = [structural_validity(s)[0] for s in structures]
    comp_ok = [bool(smact_validity(s.composition)) for s in structures]
    unique = unique_mask(structures)
    out = {"structural_validity": float(np.mean(struct_ok)), "compositional_validity": float(np.mean(comp_ok)),
           "valid": float(np.mean(np.logical_and(struct_ok, comp_ok))), "uniqueness": float(np.mean(unique))}
    out.update(wasserstein_metrics(structures, reference_stats))
    n_el = np.array([len(s.composition) for s in structures])
    out["mean_n_elements"] = float(n_el.mean())
    out["share_ge5_elements"] = float((n_el >= 5).mean())
    if train_index is not None:
        from mattergen_kit.evaluation import novel_mask

        out["novelty"] = float(np.mean(novel_mask(structures, train_index)[0]))
    out["mean_n_atoms"] = float(np.mean([len(s) for s in structures]))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", default="1000", help="comma-separated step counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--type-temperature", default=None,
                   help="comma-separated τ of the atom-type reveals (default: the model's recommended value)")
    p.add_argument("--novelty", action="store_true", help="also measure novelty against the bundled train split")
    p.add_argument("--coherence-bias", default=None,
                   help="'off', or JSON [[t...], [beta...]] (default: the model's fitted β(t), if any)")
    p.add_argument("--remask-rate", default=None,
                   help="comma-separated re-masking rates r of the atom-type sampler (default: the model's value)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import mattergen_kit as mk
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.evaluation.distribution import _basic_stats
    from mattergen_kit.generation import write_samples

    model = mk.load_model(args.model)
    reference_stats = _basic_stats(load_bundled("test", progress=False).structures)
    train_index = None
    if args.novelty:
        from mattergen_kit.evaluation import ReferenceIndex

        train_index = ReferenceIndex(load_bundled("train", progress=False).structures)
    bias = None if args.coherence_bias is None else (False if args.coherence_bias == "off"
                                                    else json.loads(args.coherence_bias))
    bias_label = "model" if bias is None else ("off" if bias is False else "custom")
    temperatures = ([None] if args.type_temperature is None
                    else [float(x) for x in args.type_temperature.split(",")])
    rates = [None] if args.remask_rate is None else [float(x) for x in args.remask_rate.split(",")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"model {model.path} (step {model.meta.get('global_step')}), {args.num} crystals, seed {args.seed}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'steps':>6} {'tau':>5} {'remask':>6} {'cryst/s':>8} {'struct':>7} {'smact':>7} {'both':>7} {'unique':>7} "
          f"{'novel':>6} {'W(dens)':>8} {'W(#el)':>7} {'W(#at)':>7} {'#el':>5} {'>=5el':>6}")
    for steps, tau, rate in [(int(s), tau, r) for s in args.steps.split(",") for tau in temperatures for r in rates]:
        start = time.perf_counter()
        structures = model.generate(args.num, seed=args.seed, steps=steps, batch_size=args.batch_size,
                                    progress=False, type_temperature=tau, coherence_bias=bias, remask_rate=rate)
        seconds = time.perf_counter() - start
        tau = tau if tau is not None else float(model.meta.get("type_temperature", 1.0))
        rate = rate if rate is not None else float(model.meta.get("remask_rate", 0.0))
        q = quality(structures, reference_stats, train_index)
        write_samples(structures, out / f"samples_{args.num}x{steps}_tau{tau:g}_bias-{bias_label}{f'_remask{rate:g}' if rate else ''}_seed{args.seed}",
                      picture=True)
        row = {"model": str(model.path), "global_step": model.meta.get("global_step"), "num": args.num,
               "steps": steps, "type_temperature": tau, "coherence_bias": bias_label if bias is None or bias is False
               else bias, "remask_rate": rate, "seed": args.seed, "seconds": seconds,
               "crystals_per_s": args.num / seconds,
               "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
               "commit": commit, **q}
        with open(out / "generation.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{steps:>6} {tau:>5g} {rate:>6g} {row['crystals_per_s']:>8.2f} {q['structural_validity']:>7.3f} "
              f"{q['compositional_validity']:>7.3f} {q['valid']:>7.3f} {q['uniqueness']:>7.3f} "
              f"{q.get('novelty', float('nan')):>6.3f} {q['wdist_density']:>8.3f} {q['wdist_n_elements']:>7.3f} "
              f"{q['wdist_n_atoms']:>7.3f} {q['mean_n_elements']:>5.2f} {q['share_ge5_elements']:>6.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
