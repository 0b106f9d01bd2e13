"""Writes notebooks/mattergen_benchmark.ipynb: MatterGen's published metrics beside the kit's measured rows.

Inputs (committed): benchmarks/results/mattergen_published/*.json (MatterGen's own metric files, MIT, copied from
../shared/data/mattergen_release/benchmark_metrics/) and the kit's evaluation summaries in benchmarks/results/.
"""
from pathlib import Path

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# MatterGen's published metrics beside the kit's own measurements

The figure a reader of the MatterGen paper looks for first: SMACT validity, structural validity, stability,
S.U.N., RMSD to the relaxed cell and novelty — MatterGen, MatterGen-MP20, DiffCSP-MP20 and CDVAE as MatterGen
published them (`benchmark_metrics/*.json` of the release), and the kit's measured rows.

**The protocols differ; read every bar with its label.** MatterGen's numbers: DFT relaxation, stability within
0.1 eV/atom of the MP2020-corrected convex hull of MatterGen's reference set (the metric files' own
descriptions; the sample count is not stated in them). The kit's rows: CHGNet relaxation, the bundled hull
(MP-20 phases + bundled crystals, DFT formation energies, CHGNet-fitted elemental references), novelty against
the bundled train split, the sample counts given. A CHGNet number is a screening estimate, not a DFT result."""),
    nbf.v4.new_code_cell("""import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import mattergen_kit

ROOT = Path(mattergen_kit.__file__).resolve().parents[1] / "benchmarks" / "results"
PUBLISHED = {"MatterGen (Alex-MP-20)": "mattergen.json", "MatterGen-MP20": "mattergen_mp_20.json",
             "DiffCSP-MP20": "diffcsp_mp_20.json", "CDVAE": "cdvae.json"}
# metric name on the common axes -> MatterGen's key, the kit's key
AXES = {"SMACT (compositional validity)": ("avg_comp_validity", "compositional_validity"),
        "structural validity": ("avg_structure_validity", "structural_validity"),
        "stability (E_hull < 0.1 eV/atom)": ("frac_stable_structures", "stability"),
        "S.U.N.": ("frac_novel_unique_stable_structures", "sun"),
        "novelty": ("frac_novel_structures", "novelty"),
        "RMSD to relaxed cell (Å)": ("avg_rmsd_from_relaxation", "rmsd")}

rows = {}
for label, name in PUBLISHED.items():
    data = json.loads((ROOT / "mattergen_published" / name).read_text())
    rows[label] = {axis: data[key]["value"] for axis, (key, _) in AXES.items()}
    rows[label]["protocol"] = "published by MatterGen: DFT relaxation, MP2020-corrected hull"
KIT = {"kit bundled model (256 samples)": "eval_bundled_model_256_summary.json"}
for label, name in KIT.items():
    data = json.loads((ROOT / name).read_text())
    rows[label] = {axis: data.get(key) for axis, (_, key) in AXES.items()}
    rows[label]["protocol"] = (f"measured by the kit: CHGNet relaxation, {data.get('hull', 'bundled hull')}, "
                               f"novelty vs {data.get('reference')}, n = {data.get('n')}")
table = pd.DataFrame(rows).T
table"""),
    nbf.v4.new_code_cell("""metrics = [a for a in AXES if not a.startswith("RMSD")]
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [3, 1]})
colors = ["#1f77b4", "#6baed6", "#9e9ac8", "#bdbdbd", "#e6550d"]
width = 0.8 / len(table)
for i, (label, row) in enumerate(table.iterrows()):
    xs = [j + i * width for j in range(len(metrics))]
    axes[0].bar(xs, [row[m] if row[m] is not None else 0 for m in metrics], width, label=label, color=colors[i % 5])
    axes[1].bar(i, row["RMSD to relaxed cell (Å)"] or 0, color=colors[i % 5])
axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, rotation=15, fontsize=8)
axes[0].set_ylabel("fraction of samples"); axes[0].set_ylim(0, 1.05)
axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
axes[1].set_xticks(range(len(table)), table.index, rotation=70, fontsize=7)
axes[1].set_ylabel("RMSD to the relaxed cell (Å)")
fig.suptitle("MatterGen (published, DFT) vs the kit (measured, CHGNet) — different protocols", fontsize=10)
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("""The kit's row is its own bundled 4.4M-parameter model. MatterGen's released checkpoints run in the kit
through its port (`tutorials/06_mattergen_models.ipynb`, `docs/mattergen_compat.md`); judging them with the kit's
evaluator needs samples from the real weights (a GPU: ~19 s per network call of 16 crystals on one CPU core, so
1000 steps take hours per batch on a CPU), which this notebook does not have yet."""),
]

nb = nbf.v4.new_notebook()
nb["cells"] = cells
nb["metadata"]["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
path = Path(__file__).resolve().parents[1] / "notebooks" / "mattergen_benchmark.ipynb"
nbf.write(nb, path)
print("wrote", path)
