"""Where does the too-many-elements problem come from: the network or the sampler?

    python benchmarks/bench_type_coherence.py [--model PATH] [--num 512] [--seed 0]

For real crystals of the bundled val split, corrupted to time t (so a share ≈ t of the atoms is masked, and
coordinates/lattice carry the matching noise), the network's x₀ prediction for each still-masked atom is
compared with the truth:

    truth_in_revealed  share of masked atoms whose true element is one of the elements already revealed
                       in the same cell
    model_in_revealed  mean over masked atoms of Σ_{c ∈ revealed elements} p_θ(x₀ = c)   (the mass the
                       network puts on elements the cell already has)
    top1               accuracy of argmax p_θ(x₀) on masked atoms

If model_in_revealed ≪ truth_in_revealed the network's predictions are incoherent with what is revealed
(a capacity/training problem); if they agree, too many elements come from how the sampler draws.

``--fit`` also prints the sampler's coherence bias fitted to these numbers (sampling/pc_sampler.py):

    β(t) = logit(truth_in_revealed) − logit(model_in_revealed)

the logit shift on the cell's own elements that makes the network's mass there match the data at time t.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "type_coherence.jsonl"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--num", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--times", default="0.25,0.5,0.75,0.95")
    p.add_argument("--fit", action="store_true", help="print β(t) for PredictorCorrectorSampler(coherence_bias=...)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    import mattergen_kit as mk
    from mattergen_kit.data import CrystalBatch
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.diffusion.atom_types import mask_logits

    model = mk.load_model(args.model)
    val = load_bundled("val", progress=False)
    batch = CrystalBatch.from_structures(val.structures[: args.num])
    gen = torch.Generator().manual_seed(args.seed)
    print(f"model {model.path} (step {model.meta.get('global_step')}), {batch.num_crystals} val crystals, seed {args.seed}")
    fitted = ([], [])
    print(f"{'t':>5} {'masked':>7} {'truth_in_revealed':>18} {'model_in_revealed':>18} {'top1':>6}")
    for t_value in [float(x) for x in args.times.split(",")]:
        t = torch.full((batch.num_crystals,), t_value)
        noisy, _ = model.diffusion.corrupt(batch, t, generator=gen)
        with torch.no_grad():
            out = model.denoiser.eval()(noisy, t)
        probs = torch.softmax(mask_logits(out.type_logits), dim=-1)
        masked = noisy.atom_types == 101
        truth, model_mass, correct, count = 0.0, 0.0, 0, 0
        bidx = batch.batch_idx
        for b in range(batch.num_crystals):
            atoms = (bidx == b).nonzero().squeeze(-1)
            m = atoms[masked[atoms]]
            revealed = set((noisy.atom_types[atoms][~masked[atoms]] - 1).tolist())
            if not len(m) or not revealed:
                continue
            cls = torch.tensor(sorted(revealed))
            true = batch.atom_types[m] - 1
            truth += float(sum(int(c) in revealed for c in true))
            model_mass += float(probs[m][:, cls].sum())
            correct += int((probs[m].argmax(-1) == true).sum())
            count += len(m)
        print(f"{t_value:>5.2f} {masked.float().mean():>7.3f} {truth / count:>18.3f} {model_mass / count:>18.3f} "
              f"{correct / count:>6.3f}", flush=True)
        logit = lambda p: math.log(p / (1 - p))  # noqa: E731
        fitted[0].append(t_value)
        fitted[1].append(round(logit(truth / count) - logit(model_mass / count), 4))
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps({"model": str(model.path), "global_step": model.meta.get("global_step"),
                                 "num": batch.num_crystals, "seed": args.seed, "t": t_value,
                                 "masked": float(masked.float().mean()), "truth_in_revealed": truth / count,
                                 "model_in_revealed": model_mass / count, "top1": correct / count}) + "\n")
    if args.fit:
        print("coherence_bias (t points, β points):", json.dumps([fitted[0], fitted[1]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
