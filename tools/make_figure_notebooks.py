"""Writes notebooks/bundled_model_figures.ipynb (source kept as a script so it is reviewable).

    python tools/make_figure_notebooks.py && jupyter nbconvert --execute --inplace notebooks/bundled_model_figures.ipynb
"""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# Figures: the bundled model

How the bundled model was trained (three legs on 2 CPU cores, each a warm start of the previous one) and what
it generates, against the round-1 model it replaced. Every number comes from a committed benchmark file:
`benchmarks/results/quality_*.json` (`python benchmarks/bench_base_quality.py`, seed 0),
`type_coherence.jsonl` (`bench_type_coherence.py`) and `generation.jsonl` (`bench_generation.py`).
Stability and RMSD are CHGNet relaxations judged on the bundled DFT hull: screening estimates."""),
    nbf.v4.new_code_cell("""from pathlib import Path
import json
import pandas as pd
import matplotlib.pyplot as plt
import mattergen_kit
from mattergen_kit.generation import BUNDLED_CHECKPOINT, load_model

ROOT = Path(mattergen_kit.__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LOGS = BUNDLED_CHECKPOINT.parent / "archive" / "logs"
model = load_model()
print(model.meta.get("lineage"))"""),
    nbf.v4.new_markdown_cell("## Training curves of the three legs (validation loss of the EMA weights)"),
    nbf.v4.new_code_cell("""legs, offset = [], 0
for name, path in [("round 1", LOGS / "v1_metrics.csv"), ("2a: + crystal summary", LOGS / "v2a_metrics.csv"),
                   ("2b: + composition logits (shipped)", BUNDLED_CHECKPOINT.with_name("training_metrics.csv"))]:
    m = pd.read_csv(path)
    m["total_step"] = m["step"] + offset
    offset = int(m["total_step"].max())
    legs.append((name, m))
fields = ["loss", "loss_types", "loss_coords", "loss_lattice"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for ax, f in zip(axes, fields):
    for name, m in legs:
        va = m.dropna(subset=[f"val/{f}"])
        ax.plot(va["total_step"], va[f"val/{f}"], "o-", ms=1.5, lw=0.8, label=name)
    ax.set_title(f"val/{f}"); ax.set_xlabel("optimizer step (all legs)"); ax.set_yscale("log")
axes[0].legend(fontsize=7)
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("## The issue-9 table: round 1 against the shipped model"),
    nbf.v4.new_code_cell("""runs = {p.stem.removeprefix("quality_"): json.loads(p.read_text()) for p in sorted(RESULTS.glob("quality_*.json"))}
keys = ["num", "steps", "structural_validity", "compositional_validity", "uniqueness", "novelty", "mean_n_elements",
        "share_ge5_elements", "wdist_n_elements", "wdist_density", "wdist_n_atoms", "rmsd", "stability", "sun"]
table = pd.DataFrame({tag: {k: r.get(k) for k in keys} for tag, r in runs.items()})
table"""),
    nbf.v4.new_code_cell("""targets = {"structural_validity": (0.99, "≥"), "compositional_validity": (0.86, "≥"), "uniqueness": (0.97, "≥"),
           "novelty": (0.85, "≥"), "share_ge5_elements": (0.03, "≤"), "wdist_n_elements": (0.25, "≤"),
           "wdist_density": (0.3, "≤"), "wdist_n_atoms": (0.3, "≤")}
fig, ax = plt.subplots(figsize=(11, 3.4))
width = 0.8 / max(len(runs), 1)
for k, (tag, r) in enumerate(runs.items()):
    ax.bar([i + k * width for i in range(len(targets))], [r.get(n) or 0 for n in targets], width,
           label=f"{tag} ({r['num']} samples, {r['steps']} steps)")
ax.scatter([i + 0.4 - width / 2 for i in range(len(targets))], [t for t, _ in targets.values()], color="k",
           marker="_", s=600, zorder=3, label="target")
ax.set_xticks([i + 0.4 - width / 2 for i in range(len(targets))],
              [f"{n}\\n({s} {t})" for n, (t, s) in targets.items()], fontsize=7)
ax.legend(fontsize=7, ncol=2); ax.set_ylabel("value")
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("""## Why too many elements: the network's coherence with the revealed atoms

For masked atoms of real val crystals: the share whose element the cell already shows (data) against the
probability the network puts on those elements. The shipped sampler's coherence bias β(t) is the logit gap."""),
    nbf.v4.new_code_cell("""coh = pd.DataFrame([json.loads(l) for l in (RESULTS / "type_coherence.jsonl").read_text().splitlines() if l.strip()])
coh = coh.drop_duplicates(["global_step", "t"], keep="last")
fig, ax = plt.subplots(figsize=(6, 3.4))
data = coh.sort_values("t").drop_duplicates("t")
ax.plot(data["t"], data["truth_in_revealed"], "k-", lw=2, label="data")
for step, g in coh.groupby("global_step"):
    name = "round 1" if step == 33432 else ("shipped" if step == model.meta.get("global_step") else f"step {step}")
    g = g.sort_values("t")
    ax.plot(g["t"], g["model_in_revealed"], "o--", ms=3, label=f"network: {name}")
ax.set_xlabel("t (share of atoms masked)"); ax.set_ylabel("mass on the cell's own elements"); ax.legend(fontsize=7)
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("## Sampler settings (256 samples each, seed 0)"),
    nbf.v4.new_code_cell("""rows = [json.loads(l) for l in (RESULTS / "generation.jsonl").read_text().splitlines() if l.strip()]
sweeps = pd.DataFrame([r for r in rows if "type_temperature" in r])
sweeps["bias"] = sweeps.get("coherence_bias", pd.Series(["off"] * len(sweeps))).map(
    lambda b: "fitted/custom" if isinstance(b, list) else (b if isinstance(b, str) else "off"))
sweeps[["global_step", "num", "steps", "type_temperature", "bias", "crystals_per_s", "structural_validity",
        "compositional_validity", "uniqueness", "novelty", "mean_n_elements", "share_ge5_elements",
        "wdist_n_elements", "wdist_density"]]"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "notebooks/bundled_model_figures.ipynb")
print("wrote notebooks/bundled_model_figures.ipynb")
