"""Writes the figure notebooks under notebooks/ (source kept as a script so it is reviewable).

    python tools/make_figure_notebooks.py [NAME ...]      # default: all; NAME e.g. quality_vs_steps
    jupyter nbconvert --execute --inplace notebooks/NAME.ipynb     # they are committed with their outputs

Each notebook reads committed results (benchmarks/results/) rather than recomputing them; the tests run it
with small settings (MGK_SMALL=1 ...), and the figure notebooks that are not the bundled model's own write
their figures as PNG and SVG into MGK_OUT (default: notebooks/figures/).
"""
import sys

import nbformat as nbf

NOTEBOOKS = {}

NOTEBOOKS["bundled_model_figures"] = [
    nbf.v4.new_markdown_cell("""# Figures: the bundled model

How the bundled model was trained and what it generates, against the models it replaced: round 1 and the
CPU-trained model (three legs on 2 CPU cores, each a warm start of the previous one, 192 min), then the shipped
4.4M-parameter network trained from scratch in 5.8 minutes on a lent H200 GPU (`training/fast.py`). Every number
comes from a committed benchmark file: `benchmarks/results/quality_*.json` (`python benchmarks/bench_base_quality.py`,
seed 0), `type_coherence.jsonl` (`bench_type_coherence.py`) and `generation.jsonl` (`bench_generation.py`).
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
    nbf.v4.new_markdown_cell("""## Training curves (validation loss of the EMA weights) against crystals seen

The CPU model's three legs (batch 64) and the GPU model (batch 1,024, 21,000 crystals/s on the H200; its val
split draws differ from the Lightning runs', so compare shapes and levels, not the third decimal)."""),
    nbf.v4.new_code_cell("""legs, offset = [], 0
for name, path in [("CPU round 1", LOGS / "v1_metrics.csv.gz"), ("CPU 2a: + crystal summary", LOGS / "v2a_metrics.csv.gz"),
                   ("CPU 2b: + composition logits", LOGS / "v2b_metrics.csv.gz")]:
    m = pd.read_csv(path)
    m["crystals_seen"] = (m["step"] + offset) * 64
    offset = int(m["step"].max()) + offset
    legs.append((name, m))
legs.append(("GPU (shipped)", pd.read_csv(BUNDLED_CHECKPOINT.with_name("training_metrics.csv"))))
fields = ["loss", "loss_types", "loss_coords", "loss_lattice"]
fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
for ax, f in zip(axes, fields):
    for name, m in legs:
        va = m.dropna(subset=[f"val/{f}"])
        ax.plot(va["crystals_seen"], va[f"val/{f}"], "o-", ms=1.5, lw=0.8, label=name)
    ax.set_title(f"val/{f}"); ax.set_xlabel("crystals seen"); ax.set_xscale("log"); ax.set_yscale("log")
axes[0].legend(fontsize=7)
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("## The issue-9 table: round 1, the CPU model (v2b) and the shipped GPU model"),
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
    name = ("round 1" if step == 33432 else "CPU v2b" if step == 26164 else
            "shipped (GPU)" if step == model.meta.get("global_step") else f"step {step}")
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

SETUP = """import os
from pathlib import Path
import json
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import mattergen_kit

SMALL = bool(os.environ.get("MGK_SMALL"))          # the tests' small settings
NUM = int(os.environ.get("MGK_NUM", 16))           # small mode: crystals to generate
STEPS = int(os.environ.get("MGK_STEPS", 1000))     # small mode: sampler steps
SEED = 0
ROOT = Path(mattergen_kit.__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FIG_DIR = Path(os.environ.get("MGK_OUT", "figures"))
FIG_DIR.mkdir(parents=True, exist_ok=True)

def save(fig, name):
    \"\"\"Write the figure as PNG and SVG into FIG_DIR.\"\"\"
    for ext in ("png", "svg"):
        fig.savefig(FIG_DIR / f"{name}.{ext}", dpi=150, bbox_inches="tight")
    print("wrote", *(str(FIG_DIR / f"{name}.{ext}") for ext in ("png", "svg")))"""

NOTEBOOKS["distributions_vs_training"] = [
    nbf.v4.new_markdown_cell("""# Figures: generated crystals against the training data

The kind of figure in the MatterGen paper that compares the distributions of generated crystals with those of the
training set: space groups (crystal systems and the most common groups), number of distinct elements, density and
number of atoms per cell. Every figure names its sample count, sampler steps and seed.

* Full settings: the **1,000 crystals the shipped model generated at 1000 steps, seed 0** for the model card,
  drawn on a lent H200 (`python tools/sample_on_device.py`) and judged by
  `python benchmarks/bench_base_quality.py --tag gpu_1000steps --num 1000 --steps 1000`, committed in the store
  `benchmarks/results/device_samples_h200.json.gz` — read, not regenerated (sampling them takes ~45 min on these
  2 cores).
* Small settings (the tests): a handful generated on the spot with few steps — the curves are then noise.

Training data: the bundled train split (13,459 crystals; its space groups are Materials Project's, the generated
crystals' come from spglib at symprec 0.1). Figures are written as PNG and SVG into `FIG_DIR`."""),
    nbf.v4.new_code_cell(SETUP),
    nbf.v4.new_code_cell("""from mattergen_kit import datasets

train = datasets.load_bundled("train", progress=False)
if SMALL:
    model = mattergen_kit.load_model()
    generated = model.generate(NUM, seed=SEED, steps=STEPS, progress=False)
    label = f"{len(generated)} generated (bundled model, {STEPS} steps, seed {SEED}; small test settings)"
else:
    from mattergen_kit.presampled import PresampledModel
    run = json.loads((RESULTS / "quality_gpu_1000steps.json").read_text())
    store = PresampledModel(RESULTS / "device_samples_h200.json.gz", "mp_bundled_20.npz")
    generated = store.generate(run["num"], seed=run["seed"], steps=run["steps"])
    label = (f"{len(generated)} generated (shipped model, step {run['global_step']}, {run['steps']} steps, "
             f"seed {run['seed']})")
train_label = f"{len(train)} training crystals (mp-bundled-20 train)"
print(label); print(train_label)"""),
    nbf.v4.new_code_cell("""from pymatgen.core.periodic_table import Element
from mattergen_kit.data.parsing import spacegroup_number

MASS = np.array([0.0] + [float(Element.from_Z(z).atomic_mass) for z in range(1, 119)])

def describe_dataset(ds):
    \"\"\"#atoms, #elements, density (g/cm³) and space group of every crystal of a CrystalDataset, from its arrays.\"\"\"
    spans = list(zip(ds.offsets[:-1], ds.offsets[1:]))
    volume = np.abs(np.linalg.det(ds.lattice))
    mass = np.array([MASS[ds.atom_types[a:b]].sum() for a, b in spans])
    return pd.DataFrame({"n_atoms": ds.num_atoms, "n_elements": [len(set(ds.atom_types[a:b])) for a, b in spans],
                         "density": mass / volume * 1.66053906660, "spacegroup": ds.properties["spacegroup"]})

def describe_structures(structures):
    return pd.DataFrame({"n_atoms": [len(s) for s in structures],
                         "n_elements": [len(s.composition.elements) for s in structures],
                         "density": [float(s.density) for s in structures],
                         "spacegroup": [spacegroup_number(s) for s in structures]})

ref, gen = describe_dataset(train), describe_structures(generated)
pd.DataFrame({"training": ref.drop(columns="spacegroup").mean(), "generated": gen.drop(columns="spacegroup").mean()}).round(3)"""),
    nbf.v4.new_markdown_cell("""## Number of atoms, number of elements and density
Wasserstein distances to the training data in the titles. The committed `quality_gpu_1000steps.json`
(`wdist_n_atoms`, `wdist_n_elements`, `wdist_density`) measured the same crystals against the bundled **test**
split; with the full settings the cell recomputes those as a check."""),
    nbf.v4.new_code_cell("""from scipy.stats import wasserstein_distance

fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
panels = [("n_atoms", "atoms per cell", np.arange(0.5, 21.5)), ("n_elements", "distinct elements", np.arange(0.5, 8.5)),
          ("density", "density (g/cm³)", np.linspace(0, 16, 41))]
wd = {}
for ax, (col, xlabel, bins) in zip(axes, panels):
    wd[col] = wasserstein_distance(gen[col], ref[col])
    ax.hist(ref[col], bins=bins, density=True, color="0.7", label=train_label)
    ax.hist(gen[col], bins=bins, density=True, histtype="step", lw=2, color="C3", label=label)
    ax.set_xlabel(xlabel); ax.set_ylabel("density of crystals"); ax.set_title(f"W = {wd[col]:.3f}", fontsize=9)
axes[0].legend(fontsize=7, loc="upper left")
fig.suptitle(label, fontsize=9)
fig.tight_layout()
save(fig, "distributions_atoms_elements_density")
print("W to the train split:", {k: round(float(v), 3) for k, v in wd.items()})
if not SMALL:  # the committed run measured W against the *test* split: recompute that as a check
    ref_test = describe_dataset(datasets.load_bundled("test", progress=False))
    print("W to the test split: ", {k: round(float(wasserstein_distance(gen[k], ref_test[k])), 3) for k in wd},
          "committed:", {k: round(run[f"wdist_{k}"], 3) for k in wd})"""),
    nbf.v4.new_markdown_cell("## Space groups: crystal systems and the 20 most common groups of the training data"),
    nbf.v4.new_code_cell("""from pymatgen.symmetry.groups import SpaceGroup

SYSTEMS = [("triclinic", 2), ("monoclinic", 15), ("orthorhombic", 74), ("tetragonal", 142), ("trigonal", 167),
           ("hexagonal", 194), ("cubic", 230)]

def crystal_system(n):
    return next((name for name, top in SYSTEMS if 0 < n <= top), "spglib failed")

def share(values, index):
    counts = pd.Series(values).value_counts()
    return counts.reindex(index, fill_value=0) / len(values)

fig, axes = plt.subplots(1, 2, figsize=(15, 3.8), gridspec_kw={"width_ratios": [1, 2.4]})
systems = [name for name, _ in SYSTEMS]
x = np.arange(len(systems))
axes[0].bar(x - 0.2, share(ref["spacegroup"].map(crystal_system), systems), 0.4, color="0.6", label=train_label)
axes[0].bar(x + 0.2, share(gen["spacegroup"].map(crystal_system), systems), 0.4, color="C3", label=label)
axes[0].set_xticks(x, systems, rotation=40, fontsize=8); axes[0].set_ylabel("share of crystals")
axes[0].legend(fontsize=7)
top = ref["spacegroup"].value_counts().head(20).index
x = np.arange(len(top))
axes[1].bar(x - 0.2, share(ref["spacegroup"], top), 0.4, color="0.6", label="training")
axes[1].bar(x + 0.2, share(gen["spacegroup"], top), 0.4, color="C3", label="generated")
axes[1].set_xticks(x, [f"{SpaceGroup.from_int_number(int(n)).symbol} ({int(n)})" for n in top], rotation=60, fontsize=7)
axes[1].set_ylabel("share of crystals"); axes[1].legend(fontsize=7)
fig.suptitle(label + " — generated space groups by spglib, symprec 0.1", fontsize=9)
fig.tight_layout()
save(fig, "distributions_space_groups")
print(f"generated crystals in P1: {np.mean(gen['spacegroup'] == 1):.3f}  (training: {np.mean(ref['spacegroup'] == 1):.3f})")"""),
]

NOTEBOOKS["quality_vs_steps"] = [
    nbf.v4.new_markdown_cell("""# Figures: quality against the number of sampler steps

The kind of MatterGen figure that shows how S.U.N., validity and the match to the data change with the number of
denoising steps — drawn only from **measured, committed numbers** in `benchmarks/results/`; nothing is sampled or
relaxed here, so the small (test) and the full settings draw the same figure.

What was measured (seed 0 throughout; every point is labelled with its sample count):
* `generation.jsonl` (`benchmarks/bench_generation.py`): the round-1 model (step 33,432) at 50–1000 steps (64
  samples; 256 at 1000), and an intermediate round-2b checkpoint (step 6,500) with the fitted coherence bias at
  50/100/200/1000 steps (256 samples each, the `samples_256x{50,100,200,1000}_tau1_bias-custom_seed0` runs);
* `quality_*.json` (`benchmarks/bench_base_quality.py`): round 1 at 100 steps and the CPU model v2b at 100 steps
  (1000 samples each), v2b at 1000 steps (256 samples, CHGNet-relaxed: stability and S.U.N.), and the shipped GPU
  model at 100 and 1000 steps (1000 samples each drawn on the lent H200, the first 256 CHGNet-relaxed);
* `generation.jsonl`: the shipped GPU model at 50/100/200 steps (256 samples each, drawn here);
* `eval_bundled_model_256_summary.json`: round 1 at 1000 steps (256 samples, CHGNet-relaxed).

S.U.N. needs a CHGNet relaxation of every sample (~15 min per 256 on one core here), so it exists only at 1000
steps; the other step counts have no S.U.N. point rather than an estimate."""),
    nbf.v4.new_code_cell(SETUP),
    nbf.v4.new_code_cell("""rows = []
gen_rows = [json.loads(l) for l in (RESULTS / "generation.jsonl").read_text().splitlines() if l.strip()]
round1 = [r for r in gen_rows if r["global_step"] == 33432 and "type_temperature" not in r]
for r in round1:
    rows.append(dict(r, series="round 1 (step 33,432)", source="generation.jsonl"))
# the intermediate 2b checkpoint with the fitted bias: the bias of its 1000-step row (a 1.5x bias was also tried)
mid = [r for r in gen_rows if r["global_step"] == 6500 and isinstance(r.get("coherence_bias"), list)]
fitted = next(r["coherence_bias"] for r in mid if r["steps"] == 1000)
for r in mid:
    if r["coherence_bias"] == fitted and r.get("type_temperature", 1.0) == 1.0:
        rows.append(dict(r, series="round 2b, step 6,500, fitted bias", source="generation.jsonl"))
NAMES = {33432: "round 1 (step 33,432)", 26164: "CPU v2b (step 26,164)", 6422: "GPU, shipped (step 6,422)"}
gpu = [r for r in gen_rows if r["global_step"] == 6422 and isinstance(r.get("coherence_bias"), list)
       and not r.get("remask_rate")]
for r in gpu:   # the shipped GPU model at 50/100/200 steps (256 samples each, its fitted bias)
    rows.append(dict(r, series=NAMES[6422], source="generation.jsonl"))
for path in sorted(RESULTS.glob("quality_*.json")):
    r = json.loads(path.read_text())
    name = NAMES.get(r["global_step"], f"step {r['global_step']:,}")
    rows.append(dict(r, series=name, source=path.name))
ev = json.loads((RESULTS / "eval_bundled_model_256_summary.json").read_text())
# the same 256 crystals as round 1's 256 x 1000 row of generation.jsonl, relaxed: take its stability and S.U.N. only
# (its W distances are of the relaxed crystals)
rows.append({"series": "round 1 (step 33,432)", "steps": 1000, "num": ev["n"], "stability": ev["stability"],
             "sun": ev["sun"], "source": "eval_bundled_model_256_summary.json"})
table = pd.DataFrame(rows)
cols = ["series", "steps", "num", "structural_validity", "compositional_validity", "uniqueness", "novelty",
        "wdist_density", "wdist_n_elements", "stability", "sun", "source"]
table = table[[c for c in cols if c in table]].sort_values(["series", "steps", "num"]).reset_index(drop=True)
table.round(3)"""),
    nbf.v4.new_code_cell("""metrics = [("structural_validity", "structural validity"), ("compositional_validity", "SMACT validity"),
           ("wdist_density", "W(density) to train, g/cm³"), ("sun", "S.U.N. (CHGNet; only where relaxed)")]
fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
markers = {"round 1 (step 33,432)": "o", "round 2b, step 6,500, fitted bias": "s", "CPU v2b (step 26,164)": "^",
           "GPU, shipped (step 6,422)": "*"}
for ax, (key, title) in zip(axes, metrics):
    for k, (series, g) in enumerate(table.dropna(subset=[key]).groupby("series")):
        for num, gg in g.sort_values("steps").groupby("num"):     # one line per sample count, never mixed
            p = gg[key].to_numpy(float)
            # shares get their binomial standard error; W distances have none here
            err = np.sqrt(p * (1 - p) / num) if key != "wdist_density" else None
            ax.errorbar(gg["steps"], p, yerr=err, marker=markers.get(series, "D"), ms=6 if num >= 256 else 4,
                        color=f"C{k}", ls="-" if len(gg) > 1 else "none", capsize=2, label=f"{series}, n={num}")
            for s, v in zip(gg["steps"], p):
                ax.annotate(f"{num}", (s, v), textcoords="offset points", xytext=(4, 4), fontsize=6, color=f"C{k}")
    ax.set_xscale("log"); ax.set_xlim(35, 1500)
    ax.set_xticks([50, 100, 200, 500, 1000], ["50", "100", "200", "500", "1000"])
    ax.set_xlabel("sampler steps"); ax.set_title(title, fontsize=9)
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, -0.08))
fig.suptitle("measured quality vs sampler steps (seed 0; number next to a point: samples; bars: binomial s.e.)",
             fontsize=9)
fig.tight_layout()
save(fig, "quality_vs_steps")"""),
    nbf.v4.new_markdown_cell("""Reading it (the numbers are those of the table above):
* **W(density)** falls with more steps where 256 samples were drawn per point: 0.48 → 0.28 → 0.24 → 0.16 g/cm³
  for the step-6,500 checkpoint at 50/100/200/1000 steps; the CPU model v2b has 0.32 at 100 steps (1000 samples)
  and 0.24 at 1000 (256). Round 1's 64-sample points (0.82, 0.25, 0.36, 0.67, 0.49) jump around: 64 samples
  are too few for this distance.
* **SMACT validity** rises with steps for the step-6,500 checkpoint (0.74 → 0.76 → 0.78 → 0.82) and for the CPU
  model v2b (0.78 at 100 → 0.81 at 1000), by about the size of the error bars per step; round 1's 64-sample points are
  noise.
* **Structural validity** is 0.98–1.00 everywhere.
* **S.U.N.** at 1000 steps: 0.441 (round 1), 0.488 (CPU v2b) and 0.508 (shipped GPU model), 256 relaxed samples
  each — screening estimates from CHGNet on the bundled DFT hull (`mattergen_kit/checkpoints/MODEL_CARD.md`); the
  GPU model also at 100 steps (0.496). No S.U.N. exists at the other step counts.
* **The shipped GPU model** (stars): 256 samples at 50/100/200 steps give SMACT 0.81/0.78/0.82 and W(density)
  0.44/0.56/0.30; on 1,000 samples SMACT is 0.758 at 100 steps against 0.813 at 1000, W(density) 0.22 against 0.12,
  and of the first 256 relaxed the RMSD is 0.82 against 0.60 Å, stability 0.504 against 0.523. More steps still
  pay, so 1000 stays the default; MatterGen-level quality at ≤ 100 steps is not reached."""),
    nbf.v4.new_markdown_cell("""## Few-step samplers: quality against network calls (issue 21)

`benchmarks/bench_few_step.py` samples the shipped base model (seed 0, the same numbers of atoms and batch seeds as
`generate()`) with MatterGen's reference predictor–corrector sampler and with the few-step options of
`PredictorCorrectorSampler` (`mattergen_kit/sampling/few_step.py`: probability-flow DDIM / DPM-Solver++(2M) updates,
a ρ time grid, reduced noise, confidence-ordered unmasking, bf16 network calls), and judges every configuration on
the same rows. The x axis is the number of network calls per crystal (NFE; the reference sampler makes 2 per step).
The 1000-step points (and `ref100_gpu`) are the samples drawn on the lent GPU (`device_samples_h200.json.gz`).
`force_rms` is the median RMS CHGNet force on the first 256 generated cells (eV/Å, single point, no relaxation): a
cheap stand-in for how far a cell is from its relaxed geometry. n=256 and n=512 points are screening runs
(`few_step_screen*.json`, `few_step_rmsd_screen.json`: the first 256 of the 1000-crystal draw, all relaxed;
`few_step_types_screen.json`), n=1000 the tables (`few_step_table256.json`: the first 256 CHGNet-relaxed for RMSD,
stability and S.U.N., about ±0.03; the older `few_step_table.json` relaxed 64, about ±0.06)."""),
    nbf.v4.new_code_cell("""few = []
for path in sorted(RESULTS.glob("few_step_*.json")):
    doc = json.loads(path.read_text())
    for name, r in doc["rows"].items():
        few.append(dict(r, file=path.name, sampler="reference" if name.startswith("ref") else "few-step"))
few = pd.DataFrame(few)
cols = ["file", "config", "num", "nfe", "sample_seconds", "smact", "structural_validity", "wdist_density",
        "wdist_n_elements", "mean_n_elements", "share_ge5_elements", "uniqueness", "novelty", "force_rms", "rmsd",
        "stability", "sun"]
few[[c for c in cols if c in few]].sort_values(["num", "nfe", "config"]).round(3)"""),
    nbf.v4.new_code_cell("""panels = [("smact", "SMACT validity"), ("wdist_density", "W(density) to test, g/cm³"),
          ("force_rms", "median RMS CHGNet force, eV/Å (first 256 cells)"),
          ("rmsd", "RMSD generated → relaxed, Å (first 64 or 256 relaxed)")]
panels = [(k, title) for k, title in panels if k in few and few[k].notna().any()]
fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4))
for ax, (key, title) in zip(np.atleast_1d(axes), panels):
    for (sampler, num), g in few.dropna(subset=[key]).groupby(["sampler", "num"]):
        ax.scatter(g["nfe"], g[key], marker="o" if sampler == "reference" else "^", s=40,
                   label=f"{sampler}, n={num}", color="C0" if sampler == "reference" else "C3",
                   alpha=1.0 if num >= 1000 else 0.6)
        for nfe, v, name in zip(g["nfe"], g[key], g["config"]):
            ax.annotate(name, (nfe, v), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xscale("log"); ax.set_xlabel("network calls per crystal (NFE)"); ax.set_title(title, fontsize=9)
np.atleast_1d(axes)[0].legend(fontsize=7)
fig.suptitle("few-step samplers vs MatterGen's reference sampler (shipped base model, seed 0)", fontsize=9)
fig.tight_layout()
save(fig, "quality_vs_nfe")"""),
    nbf.v4.new_markdown_cell("""Reading it (1,000 samples, seed 0, the first 256 relaxed; `python benchmarks/bench_few_step.py --configs
ref1000 fast100_cws_c2half fast50_cws_c2half fast100_cws --num 1000 --relax-n 256 --tag table256`; the 100-step
reference row from `few_step_table.json`, 64 relaxed):

| row | reference, 1000 steps (2,000 NFE) | reference, 100 steps (200 NFE) | **few-step, 100 steps (200 NFE, default)** | few-step, 50 steps (100 NFE) |
|---|---|---|---|---|
| SMACT | 0.813 | 0.758 | 0.819 | 0.812 |
| structural validity | 0.983 | 0.997 | 0.978 | 0.982 |
| RMSD generated → relaxed | 0.600 Å | 0.851 Å (64) | 0.599 Å | 0.672 Å |
| stability / S.U.N. (hull `mp20+mpfe`, CHGNet) | 0.461 / 0.312 | 0.41 / 0.30 (64) | 0.441 / 0.340 | 0.434 / 0.355 |
| W(density), W(#elements) | 0.119, 0.396 | 0.223, 0.347 | 0.085, 0.378 | 0.128, 0.409 |
| mean elements, share ≥ 5 | 3.03, 7.7 % | 3.01, 5.5 % | 3.05, 7.6 % | 3.06, 9.6 % |
| uniqueness / novelty | 0.980 / 0.973 | 0.997 / 0.992 | 0.977 / 0.971 | 0.982 / 0.978 |

* What moved the geometry: **where the corrector runs**. With one Langevin corrector at every step the 100-step
  sampler relaxed by 0.68 Å; with none above t = 0.5 and two per step below (the same 200 calls) by 0.60 Å, the
  1000-step sampler's distance, and SMACT and W(density) improved with it. On the first 256 of the draw, 66 steps
  with two correctors each (198 calls) gave 0.67 Å and η = 0.6 gave 0.62 Å but validity 0.972.
* The **noise scale** η of the corrector's random term: the median force on 256 cells falls from 4.1 (η = 1) to 2.1
  (η = 0.7) and 1.6 (η = 0.5); η = 0.5 costs validity (0.949) and uniqueness (0.949), so the sampler uses 0.7.
* The probability-flow predictor (DPM-Solver++(2M)) instead of the ancestral step: SMACT 0.81–0.82 vs 0.79 and
  W(density) 0.30–0.35 vs 0.47 at 256 samples; without any corrector (100 NFE) the forces double (8.4) and
  W(density) is 0.69: the Langevin corrector is what the ODE needs.
* Atom types: drawing the atoms revealed in one step one after the other (`coherence_within_step`) brought W(density)
  from 0.25 to 0.12; a temperature of 0.8–0.9, confidence-ordered unmasking, a 1.5× coherence bias and remasking did
  not help (`few_step_types_screen.json`).
* A ρ = 2 time grid (more steps at small t): no better (forces 4.3, SMACT 0.785). bf16 network calls: the same
  denoising loss on val crystals at every t to 4 digits and the same quality, at 2.5–2.8× the calls per second on
  this CPU (`benchmarks/bench_denoiser_call.py`).
* A second draw (seed 1, `few_step_seed1.json`) is less flattering: RMSD 0.635 against 0.647 Å and validity 0.976
  against 0.987 for the previous default.
* Conditioned and templated requests use the few-step sampler with the corrector at full noise (η = 1): at η = 0.7
  guidance steered less; at η = 1 band gap, chemical-system and template requests steer as with the reference
  sampler at the same 100 steps (`benchmarks/results/conditioning/fast_sampler/summary.md`)."""),
]


NOTEBOOKS["conditioning_figures"] = [
    nbf.v4.new_markdown_cell("""# Figures: steering the conditioned bundled model

The kinds of figure in the MatterGen paper that show conditioning at work, from this project's conditioned model
(`mattergen_kit/checkpoints/mp_bundled_20_conditioned.npz`): the share of samples in the requested space group
against the guidance scale γ, chemical systems, property distributions shifted toward a target, and what steering
costs in validity, uniqueness and stability. γ = 0 is the unconditional model.

* Full settings: the committed proof `benchmarks/results/conditioning/adherence.jsonl` (seed 0; space group at
  200 sampler steps, the rest at 100; sample counts on every figure): the guidance-only space-group and
  chemical-system rows and the band gap, HHI and magnetic density rows (256 samples each) were drawn on a lent H200
  (`python tools/sample_on_device.py`) and judged here; the bulk modulus (16 per point) and the Wyckoff-template rows
  (64 each) were sampled here — read, not regenerated. A point measured twice shows its larger run
  (`adherence.current_rows`).
  `benchmarks/results/conditioning/summary.md` has the tables.
* Small settings (the tests): one space-group target sampled on the spot with a handful of crystals and few steps.

Band gap is the project's composition predictor, magnetic density and bulk modulus CHGNet (ML estimates),
stability a CHGNet relaxation on the bundled DFT hull (a screening estimate). Figures: PNG and SVG in `FIG_DIR`."""),
    nbf.v4.new_code_cell(SETUP),
    nbf.v4.new_code_cell("""from mattergen_kit.studies import adherence

if SMALL:
    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT, load_model
    model = load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    rows = adherence.run(model, "space_group", [225], gammas=[0.0, 2.0], num=NUM, steps=min(STEPS, 20),
                         out=FIG_DIR / "adherence", progress=False)
else:
    rows = adherence.current_rows(adherence.read_rows(RESULTS / "conditioning" / "adherence.jsonl"))
table = pd.DataFrame(rows).drop(columns=["values"])
print(len(rows), "rows:", ", ".join(f"{p} ({n})" for p, n in table["property"].value_counts().items()))"""),
    nbf.v4.new_markdown_cell("## Space group: hit rate against γ (spglib, symprec 0.1)"),
    nbf.v4.new_code_cell("""fig, ax = plt.subplots(figsize=(6, 4))
adherence.plot_hit_rates(rows, "space_group", ax=ax)
save(fig, "conditioning_space_group_hit_rate")
table[table.property == "space_group"].pivot_table(index="target", columns="gamma", values="hit_rate")"""),
    nbf.v4.new_markdown_cell("## Chemical system: samples with exactly the requested elements (the sampler masks the rest)"),
    nbf.v4.new_code_cell("""if any(r["property"] == "chemical_system" for r in rows):
    fig, ax = plt.subplots(figsize=(6, 4))
    adherence.plot_hit_rates(rows, "chemical_system", metric="exact_system", ax=ax)
    save(fig, "conditioning_chemical_system")
    display(table[table.property == "chemical_system"][["target", "gamma", "num", "in_system", "exact_system",
                                                        "valid_and_unique", "compositional_validity"]])"""),
    nbf.v4.new_markdown_cell("## Scalar properties: the samples' distribution at each γ against the target (dashed)"),
    nbf.v4.new_code_cell("""for name in ("band_gap", "hhi_production", "magnetic_density", "bulk_modulus"):
    if any(r["property"] == name for r in rows):
        axes = adherence.plot_property_shifts(rows, name)
        save(axes[0].figure, f"conditioning_{name}_shift")
        display(table[table.property == name][["target", "gamma", "n_measured", "median", "shift"]])"""),
    nbf.v4.new_markdown_cell("## The price of steering"),
    nbf.v4.new_code_cell("""fig, ax = plt.subplots(figsize=(6, 4))
adherence.plot_price(rows, ax=ax)
save(fig, "conditioning_price_of_steering")"""),
    nbf.v4.new_markdown_cell("""## One shared model, or one model per property?

Models fine-tuned on one property each (same base, recipe and steps as the shared model; drawn on a lent H200 and
judged here: `benchmarks/results/conditioning/per_property/`), against the shared model, at γ = 2."""),
    nbf.v4.new_code_cell("""metrics = adherence.PER_PROPERTY_METRICS    # property → (row key, label)
own = {name: adherence.read_jsonl(RESULTS / "conditioning" / "per_property" / name / "adherence.jsonl")
       for name in metrics}
own = {k: v for k, v in own.items() if v and not SMALL}
if own:
    fig, axes = plt.subplots(1, len(own), figsize=(4.2 * len(own), 3.6), squeeze=False)
    for ax, (name, rs) in zip(axes[0], own.items()):
        adherence.plot_shared_vs_per_property(rows, rs, name, *metrics[name], ax=ax)
    axes[0][0].legend(fontsize=8)
    save(fig, "conditioning_per_property")
else:
    print("small mode: the per-property comparison is read from the committed rows in full mode only")"""),
]


def write(name: str) -> None:
    nb = nbf.v4.new_notebook(cells=NOTEBOOKS[name], metadata={"kernelspec": {"name": "python3",
                                                                             "display_name": "Python 3",
                                                                             "language": "python"}})
    nbf.write(nb, f"notebooks/{name}.ipynb")
    print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    for name in sys.argv[1:] or list(NOTEBOOKS):
        write(name)
