"""Write mattergen_kit/checkpoints/MODEL_CARD.md from the shipped checkpoint and the measured benchmarks.

    python tools/write_model_card.py --old-tag v1_100steps --new-tag v2b

Sources (all committed): the checkpoint's meta; ``checkpoints/training_metrics.csv``; the quality tables
``benchmarks/results/quality_<tag>.json`` (bench_base_quality.py) of the previous and the shipped model;
the round-1 relaxation report ``benchmarks/results/eval_bundled_model_256_summary.json``; the sweeps in
``benchmarks/results/generation.jsonl`` (bench_generation.py) and ``type_coherence.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from mattergen_kit.generation import BUNDLED_CHECKPOINT
from mattergen_kit.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
V1_STEP = 33432  # the round-1 model (checkpoints/archive/mp_bundled_20_v1.pt)

# (label, key, format, target text, passes(value, row) -> bool)
ROWS = [
    ("mean distinct elements / cell (train split)", "mean_n_elements", "{:.2f}", "within 0.15 of train",
     lambda v, r: abs(v - r["train_mean_n_elements"]) <= 0.15),
    ("W(#elements) vs test split", "wdist_n_elements", "{:.3f}", "≤ 0.25", lambda v, r: v <= 0.25),
    ("share with ≥ 5 elements", "share_ge5_elements", "{:.1%}", "≤ 3 %", lambda v, r: v <= 0.03),
    ("SMACT charge balance", "compositional_validity", "{:.3f}", "≥ 0.86", lambda v, r: v >= 0.86),
    ("structural validity", "structural_validity", "{:.3f}", "≥ 0.99", lambda v, r: v >= 0.99),
    ("RMSD generated → CHGNet-relaxed (Å)", "rmsd", "{:.3f}", "≤ 0.30", lambda v, r: v <= 0.30),
    ("stability (E_hull ≤ 0.1 eV/atom, CHGNet, bundled hull)", "stability", "{:.3f}", "≥ 0.60", lambda v, r: v >= 0.60),
    ("S.U.N. (same)", "sun", "{:.3f}", "—", None),
    ("uniqueness", "uniqueness", "{:.3f}", "≥ 0.97", lambda v, r: v >= 0.97),
    ("novelty vs bundled train", "novelty", "{:.3f}", "≥ 0.85", lambda v, r: v >= 0.85),
    ("W(density) g/cm³ vs test split", "wdist_density", "{:.3f}", "≤ 0.3", lambda v, r: v <= 0.3),
    ("W(#atoms) vs test split", "wdist_n_atoms", "{:.3f}", "≤ 0.3", lambda v, r: v <= 0.3),
]


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _fmt(fmt, value):
    return "—" if value is None else fmt.format(value)


def quality_table(columns: list[tuple[str, dict]], judge: int) -> list[str]:
    """One row per metric, one column per run; "met" is judged on ``columns[judge]``."""
    head = "| metric | " + " | ".join(label for label, _ in columns) + " | target | met |"
    lines = [head, "|" + "---|" * (len(columns) + 3)]
    ref = columns[judge][1]
    for label, key, fmt, target, passes in ROWS:
        cells = [_fmt(fmt, run.get(key)) for _, run in columns]
        cells[judge] = f"**{cells[judge]}**"
        value = ref.get(key)
        met = "—" if passes is None or value is None else ("yes" if passes(value, ref) else "**no**")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} | {met} |")
    lines.append(f"| *train split: mean elements {ref['train_mean_n_elements']:.2f}, "
                 f"≥ 5 elements {ref['train_share_ge5_elements']:.1%}* |" + " |" * (len(columns) + 2))
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-tag", default="v1_100steps")
    p.add_argument("--new-tag", required=True, help="the shipped model at its default steps (judged)")
    p.add_argument("--extra-tag", action="append", default=[], help="more runs of the shipped model to show")
    args = p.parse_args(argv)

    ckpt = load_checkpoint(BUNDLED_CHECKPOINT)
    meta, cfg = ckpt["meta"], ckpt["meta"].get("train_config", {})
    n_params = sum(v.numel() for v in ckpt["state_dict"].values())
    metrics = pd.read_csv(BUNDLED_CHECKPOINT.with_name("training_metrics.csv"))
    val = metrics.dropna(subset=["val/loss"]).iloc[-1]
    old, new = _json(RESULTS / f"quality_{args.old_tag}.json"), _json(RESULTS / f"quality_{args.new_tag}.json")
    old_1000 = _json(RESULTS / "eval_bundled_model_256_summary.json")
    extras = [_json(RESULTS / f"quality_{tag}.json") for tag in args.extra_tag]
    step = meta.get("global_step")

    lines = [
        "# Model card: mp_bundled_20.pt (the bundled unconditional model)", "",
        "An unconditional MatterGen-style crystal diffusion model (atom types, fractional coordinates, lattice)",
        "with mattergen_kit's `CrystalDenoiser`. It is small and was trained on CPU: use it to try the toolkit,",
        "not as a substitute for MatterGen's released checkpoints.", "",
        "| item | value |", "|---|---|",
        f"| data | {meta.get('dataset')} — 13,459 Materials Project crystals with ≤ 20 atoms (`datasets/README.md`) |",
        f"| network | CrystalDenoiser {ckpt['model_config']} — {n_params:,} parameters |",
        f"| diffusion | {ckpt['diffusion_config'] or 'reference defaults'} (lattice prior density from the bundled train split) |",
        f"| optimisation | AdamW lr {cfg.get('lr')}, {cfg.get('lr_schedule')} schedule, warm-up {cfg.get('warmup_steps')}, "
        f"grad clip {cfg.get('grad_clip_algorithm')} {cfg.get('grad_clip')}, EMA {cfg.get('ema_decay')} (EMA weights shipped) |",
        f"| batch size | {cfg.get('batch_size')} |",
        f"| training, in legs (each a warm start) | {meta.get('lineage', '—')} |",
        f"| wall time, hardware | {meta.get('wall_minutes')} min in all on {meta.get('hardware')} |",
        f"| validation loss (EMA, last leg) | total {val['val/loss']:.4f}; types {val['val/loss_types']:.4f}, "
        f"coords {val['val/loss_coords']:.4f} (weighted 0.1 in the total), lattice {val['val/loss_lattice']:.4f} "
        "(round 1 ended at 0.6684; types 0.1444, coords 4.3074, lattice 0.0933) |",
        f"| trained from commit | `{meta.get('trained_from_commit')}` |",
        f"| reproduce | `{meta.get('reproduce')}` |",
        f"| sampler defaults | {meta.get('recommended_steps')} steps, atom-type temperature τ = "
        f"{meta.get('type_temperature', 1.0)}, coherence bias β(t) = {meta.get('coherence_bias')} (t points, β) fitted on "
        "the val split (the CLI and `generate()` defaults; `--steps`, `type_temperature=`, `coherence_bias=False`) |", "",
    ]
    if old and new:
        def label(name, run):
            return f"{name}, {run['num']} samples, {run['steps']} steps"

        columns = [(label("round 1", old), old)]
        if old_1000:
            columns.append((f"round 1, {old_1000['n']} samples, 1000 steps (earlier report)", old_1000))
        columns += [(label("shipped", run), run) for run in extras if run]
        columns.append((label("**shipped, default steps**", new), new))
        lines += ["## Quality: round 1 against the shipped model", "",
                  "`python benchmarks/bench_base_quality.py --tag TAG --num N --steps K --relax-n R --workers 2` "
                  "(seed 0; sampler defaults of each model: the shipped one uses its fitted coherence bias). Fractions "
                  "of 1,000 samples carry about ±1.5 % noise, of 256 about ±3 %. RMSD, stability and S.U.N. come from "
                  "relaxing the samples with CHGNet and judging them on the bundled DFT hull: a screening estimate "
                  "(`docs/evaluation_potentials.md`: CHGNet calls ~20 % of truly unstable crystals stable). "
                  "Wasserstein distances are to the bundled test split. \"met\" is judged on the last column.", ""]
        lines += quality_table(columns, judge=len(columns) - 1)
        lines += ["", "The first 32 crystals of `make demo` (1000 steps, seed 0; formulas in "
                  "`docs/figures/demo_32_seed0_summary.csv`):", "", "![demo grid](../../docs/figures/demo_grid_32_seed0.png)", ""]
    coherence = _jsonl(RESULTS / "type_coherence.jsonl")
    if coherence:
        lines += ["## Where the extra elements came from", "",
                  "`python benchmarks/bench_type_coherence.py --model PATH --times 0.02,0.25,0.5,0.75`: real val "
                  "crystals (512) corrupted to time t; for the still-masked atoms, the share whose true element is "
                  "already revealed in the cell (data) against the probability the network puts on those elements:", "",
                  "| model (step) | t | masked | data | network | top-1 |", "|---|---|---|---|---|---|"]
        seen = set()
        for r in coherence:
            key = (r["global_step"], r["t"])
            if key in seen:
                continue
            seen.add(key)
            name = "round 1" if r["global_step"] == V1_STEP else ("shipped" if r["global_step"] == step else "intermediate")
            lines.append(f"| {name} ({r['global_step']}) | {r['t']:.2f} | {r['masked']:.3f} | {r['truth_in_revealed']:.3f} "
                         f"| {r['model_in_revealed']:.3f} | {r['top1']:.3f} |")
        lines.append("")
    sweeps = [r for r in _jsonl(RESULTS / "generation.jsonl") if "type_temperature" in r]
    if sweeps:
        lines += ["## Sampler settings measured", "",
                  "`python benchmarks/bench_generation.py --model PATH --num N --steps K --type-temperature T --novelty` "
                  "(seed 0, one torch thread on the shared 2-core CPU; crystals/s are contended figures):", "",
                  "| model (step) | samples | steps | τ | crystals/s | structural | SMACT | unique | novel | W(density) | "
                  "W(#el) | W(#atoms) | mean #el | ≥ 5 el |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sweeps:
            name = "round 1" if r["global_step"] == V1_STEP else ("shipped" if r["global_step"] == step else "other")
            lines.append(f"| {name} ({r['global_step']}) | {r['num']} | {r['steps']} | {r['type_temperature']:g} | "
                         f"{r['crystals_per_s']:.2f} | {r['structural_validity']:.3f} | {r['compositional_validity']:.3f} | "
                         f"{r['uniqueness']:.3f} | {r.get('novelty', float('nan')):.3f} | {r['wdist_density']:.3f} | "
                         f"{r['wdist_n_elements']:.3f} | {r['wdist_n_atoms']:.3f} | {r['mean_n_elements']:.2f} | "
                         f"{r['share_ge5_elements']:.1%} |")
        lines.append("")
    notes = BUNDLED_CHECKPOINT.with_name("MODEL_NOTES.md")
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    lines += ["## Limits", "",
              f"- The network is ~{44.6e6 / n_params:.0f}× smaller than MatterGen's GemNet-T (44.6M parameters) and "
              "was trained on 2 CPU cores for a few hours; MatterGen's MP-20 model trained on GPUs for days.",
              "- Elements are restricted to MatterGen's 76 (Z ≤ 83 without noble gases, Tc, Pm); at most 20 atoms.",
              "- Unconditional: property steering uses the conditioned model fine-tuned from this one.", ""]
    BUNDLED_CHECKPOINT.with_name("MODEL_CARD.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
