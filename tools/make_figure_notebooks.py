"""Writes notebooks/bundled_model_figures.ipynb (source kept as a script so it is reviewable)."""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# Figures: the bundled model

Training curves of the bundled model (per field, from the metrics shipped beside the checkpoint) and
its sample quality against the targets, from `benchmarks/results/generation.jsonl`
(written by `python benchmarks/bench_generation.py`)."""),
    nbf.v4.new_code_cell("""from pathlib import Path
import json
import pandas as pd
import matplotlib.pyplot as plt
import mattergen_kit
from mattergen_kit.generation import BUNDLED_CHECKPOINT

ROOT = Path(mattergen_kit.__file__).resolve().parents[1]
metrics = pd.read_csv(BUNDLED_CHECKPOINT.with_name("training_metrics.csv"))
metrics.tail()"""),
    nbf.v4.new_code_cell("""fields = ["loss", "loss_types", "loss_coords", "loss_lattice"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for ax, f in zip(axes, fields):
    tr = metrics.dropna(subset=[f"train/{f}"])
    va = metrics.dropna(subset=[f"val/{f}"])
    ax.plot(tr["step"], tr[f"train/{f}"].rolling(25, min_periods=1).mean(), lw=0.8, label="train (smoothed)")
    ax.plot(va["step"], va[f"val/{f}"], "o-", ms=2, label="val (EMA weights)")
    ax.set_title(f); ax.set_xlabel("step"); ax.set_yscale("log")
axes[0].legend()
fig.tight_layout()"""),
    nbf.v4.new_code_cell("""rows = [json.loads(l) for l in (ROOT / "benchmarks/results/generation.jsonl").read_text().splitlines() if l.strip()]
results = pd.DataFrame(rows)
results[["num", "steps", "crystals_per_s", "structural_validity", "compositional_validity", "uniqueness",
         "wdist_density", "wdist_n_elements", "wdist_n_atoms"]]"""),
    nbf.v4.new_code_cell("""targets = {"structural_validity": 0.95, "compositional_validity": 0.80, "uniqueness": 0.95}
best = results.sort_values("num").iloc[-1]
fig, ax = plt.subplots(figsize=(6, 3))
names = list(targets)
ax.bar(names, [best[n] for n in names], color="tab:blue", label=f"bundled model ({int(best['num'])} samples, {int(best['steps'])} steps)")
ax.scatter(names, [targets[n] for n in names], color="k", marker="_", s=800, zorder=3, label="target")
ax.set_ylim(0, 1.05); ax.legend(loc="lower right", fontsize=8); ax.set_ylabel("fraction")
fig.tight_layout()"""),
    nbf.v4.new_code_cell("""per_steps = results[results["num"] == results["num"].min()].sort_values("steps")
fig, ax1 = plt.subplots(figsize=(6, 3))
ax1.plot(per_steps["steps"], per_steps["compositional_validity"], "o-", label="SMACT validity")
ax1.plot(per_steps["steps"], per_steps["structural_validity"], "s-", label="structural validity")
ax1.set_xscale("log"); ax1.set_xlabel("sampler steps"); ax1.set_ylabel("fraction"); ax1.legend(fontsize=8)
ax2 = ax1.twinx(); ax2.plot(per_steps["steps"], per_steps["crystals_per_s"], "k--", label="crystals/s")
ax2.set_ylabel("crystals / s (dashed)")
fig.tight_layout()"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "notebooks/bundled_model_figures.ipynb")
print("wrote notebooks/bundled_model_figures.ipynb")
