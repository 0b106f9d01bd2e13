"""Writes tutorials/03_train_and_finetune.ipynb (kept as a script so the notebook's source is reviewable).

The fine-tune part came from the former tutorials/03_conditioning.ipynb; its conditioning and guidance part
moved to tutorials/04_conditioning.ipynb.
"""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# 03 · Train a small model, resume it, and fine-tune on your own property

1. **Train** a small denoiser on the bundled set in a few minutes on a CPU (`mattergen_kit.training.train` with a
   `TrainConfig`; the same thing as `mattergen-kit train --config FILE`).
2. **Resume**: run the same call again with a larger budget; it continues from `run_dir/checkpoints/last.ckpt`
   (weights, EMA, optimiser and step).
3. **Fine-tune** the bundled model on a property of *your* table (`mattergen_kit.finetune`): a fresh
   zero-initialised adapter (MatterGen's mix-in) learns the property, and sampling can then ask for it.

The bundled model itself took 193 minutes in three legs on 2 CPU cores (`configs/bundled_cpu*.yaml`); the model
here is 30× smaller and trained for minutes, so do not expect good crystals from it — the point is the workflow.
Conditioning and guidance with the bundled conditioned model: `tutorials/04_conditioning.ipynb`."""),
    nbf.v4.new_code_cell("""import os
# Small settings when the tests run this notebook; raise them for real use.
SMALL = bool(os.environ.get("MGK_SMALL"))
NUM = int(os.environ.get("MGK_NUM", 16))           # crystals per setting
STEPS = int(os.environ.get("MGK_STEPS", 200))      # sampler steps
OUT = os.environ.get("MGK_OUT", "train_out")
TRAIN_MINUTES = (None, None) if SMALL else (3.0, 2.0)    # first leg, resumed leg (wall-clock budgets)
TRAIN_STEPS = (8, 12) if SMALL else (-1, -1)              # step budgets (small mode: a few steps)
FINETUNE_STEPS = 16 if SMALL else 400              # fine-tuning steps (the bundled base: ~1 s each on one core)
os.makedirs(OUT, exist_ok=True)
import torch
torch.set_num_threads(1)"""),
    nbf.v4.new_markdown_cell("""## 1 · Train a small model
`TrainConfig` holds the network (`model=DenoiserConfig(...)`), the data, the optimiser and the budget
(`configs/*.yaml` are the same fields in YAML, the network under `model:`). `dataset="bundled"` trains on the
bundled train split and validates on its val split;
`dataset="csv" | "cif" | "alexandria" | "mp20"` with `data_path=` trains on the loaders of tutorial 02.
Everything goes to `run_dir`: `checkpoints/last.ckpt`, `logs/version_k/metrics.csv` (one version per start) and
`model.pt`, the EMA weights that sampling loads."""),
    nbf.v4.new_code_cell("""from dataclasses import replace
from mattergen_kit.model import DenoiserConfig
from mattergen_kit.training import TrainConfig, train

run_dir = os.path.join(OUT, "small_run")
config = TrainConfig(
    run_dir=run_dir, seed=0,
    model=DenoiserConfig(hidden_dim=32 if SMALL else 64, num_layers=2 if SMALL else 3),  # the bundled model: 256, 6
    dataset="bundled", batch_size=16 if SMALL else 64,
    limit_train=64 if SMALL else None, limit_val=32 if SMALL else 512,
    lr=5e-4, warmup_steps=5 if SMALL else 100, lr_schedule="constant",
    max_epochs=1000, max_steps=TRAIN_STEPS[0], max_time_minutes=TRAIN_MINUTES[0],
    val_every_n_epochs=1, ckpt_every_n_steps=4 if SMALL else 200, log_every_n_steps=2 if SMALL else 20,
    progress_bar=False, num_threads=1)
model_path = train(config)
print(model_path)"""),
    nbf.v4.new_code_cell("""import mattergen_kit as mk

model = mk.load_model(model_path)
print(f"{sum(p.numel() for p in model.denoiser.parameters()):,} parameters, {model.meta.get('global_step')} steps")"""),
    nbf.v4.new_markdown_cell("""## 2 · Resume
The same call with a larger budget picks up `checkpoints/last.ckpt` and goes on (a killed run resumes the same
way: rerun the command). Each start writes a new `logs/version_k/metrics.csv`. (`lr_schedule="constant"` here: a
cosine schedule decays over the budget of the run, so a leg with a new budget would jump along the curve.)"""),
    nbf.v4.new_code_cell("""model_path = train(replace(config, max_steps=TRAIN_STEPS[1], max_time_minutes=TRAIN_MINUTES[1]))
model = mk.load_model(model_path)
print("now at step", model.meta.get("global_step"))"""),
    nbf.v4.new_code_cell("""import glob
import pandas as pd
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.4))
for k, path in enumerate(sorted(glob.glob(os.path.join(run_dir, "logs", "version_*", "metrics.csv")))):
    m = pd.read_csv(path)
    tr = m.dropna(subset=["train/loss"]) if "train/loss" in m else m.iloc[:0]
    va = m.dropna(subset=["val/loss"]) if "val/loss" in m else m.iloc[:0]
    ax.plot(tr["step"], tr["train/loss"], lw=0.8, label=f"leg {k + 1}: train")
    ax.plot(va["step"], va["val/loss"], "o-", ms=3, label=f"leg {k + 1}: val (EMA)")
ax.set_xlabel("optimizer step"); ax.set_ylabel("loss"); ax.set_yscale("log"); ax.legend(fontsize=8)
ax.set_title(f"small model, {config.model.hidden_dim}×{config.model.num_layers} layers", fontsize=9)
fig.tight_layout()"""),
    nbf.v4.new_markdown_cell("""Sample from it like from the bundled model. After a few minutes of training expect loose, chemically odd
cells; the bundled model needed 65k steps (`mattergen_kit/checkpoints/MODEL_CARD.md`). After only a dozen steps
(the tests' small mode) the lattice score is still wild and the sampler can diverge, which we catch here."""),
    nbf.v4.new_code_cell("""try:
    cs = model.generate(NUM, seed=0, steps=STEPS, progress=False)
    display(pd.DataFrame([{"formula": s.composition.reduced_formula, "atoms": len(s),
                           "density (g/cm³)": round(float(s.density), 2)} for s in cs]))
except RuntimeError as err:  # torch.linalg.LinAlgError: the sampled lattice became non-finite
    print(f"sampling diverged after {model.meta.get('global_step')} training steps: {str(err)[:90]}...")
    print("A model this young (the tests' small mode) can still blow the lattice up; train longer.")"""),
    nbf.v4.new_markdown_cell("""The same from a shell (the YAML takes the same fields; rerunning it resumes):
```bash
mattergen-kit train --config configs/tiny_test.yaml
mattergen-kit train --config configs/bundled_cpu_v3.yaml --set max_time_minutes=10
```
On a GPU: `configs/mp20_gpu.yaml`, or `python -m mattergen_kit.training.fast` (README, *Training recipes*)."""),
    nbf.v4.new_markdown_cell("""## 3 · Fine-tune on your own property
Any CDVAE-format table (a `cif` column plus property columns) works. We make one from bundled rows: 12 oxides
labelled `yes` and 12 oxygen-free crystals labelled `no`, and fine-tune the bundled model on it (all weights
plus a fresh adapter; the label is dropped 20 % of the time so the model also stays unconditional).
Numeric columns become scalar properties, others categorical (`kind=` overrides)."""),
    nbf.v4.new_code_cell("""import numpy as np
from mattergen_kit.datasets import data_root

rows = pd.read_csv(data_root() / "mp20_biternary" / "val.csv.gz", nrows=400)
oxide = np.array(["'O'" in e for e in rows["elements"]])
table = pd.concat([rows[oxide].head(12), rows[~oxide].head(12)])
table["has_oxygen"] = ["yes"] * 12 + ["no"] * 12
table_path = os.path.join(OUT, "my_table.csv")
table[["material_id", "cif", "has_oxygen"]].to_csv(table_path, index=False)
table[["material_id", "pretty_formula", "has_oxygen"]].head()"""),
    nbf.v4.new_code_cell("""path = mk.finetune(table_path, "has_oxygen", base="bundled", out=os.path.join(OUT, "finetune"),
                   max_steps=FINETUNE_STEPS, max_time_minutes=None, lr=3e-4, batch_size=12, progress=False)
print(open(os.path.join(OUT, "finetune", "MODEL_CARD.md")).read())"""),
    nbf.v4.new_markdown_cell("""Rerunning `mk.finetune` with the same `out` resumes; `mattergen-kit finetune --base bundled --table my.csv
--property has_oxygen --out runs/has_oxygen` does the same from a shell.

## Sample with the new condition
γ = 0 is the unconditional model (the condition is ignored), larger γ follows the condition more strongly.
We count the share of oxygen atoms in the samples for each label (with the small test settings the fine-tune is
only a few steps long, so do not read much into these numbers)."""),
    nbf.v4.new_code_cell("""tuned = mk.load_model(path)

def oxygen_share(structures):
    atoms = [site.specie.symbol for s in structures for site in s]
    return sum(a == "O" for a in atoms) / max(len(atoms), 1)

rows = []
for label in ["yes", "no"]:
    for gamma in [0.0, 2.0]:
        cs = tuned.generate(NUM, seed=0, steps=STEPS, conditions={"has_oxygen": label}, guidance_scale=gamma,
                            progress=False)
        rows.append({"has_oxygen": label, "γ": gamma, "O share of atoms": round(oxygen_share(cs), 3),
                     "formulas": ", ".join(s.composition.reduced_formula for s in cs[:4])})
pd.DataFrame(rows)"""),
    nbf.v4.new_markdown_cell("""## Next
- `tutorials/04_conditioning.ipynb`: the bundled conditioned model (band gap, space group, chemical system, ...),
  guidance interactively and in code.
- `tutorials/05_evaluation.ipynb`: validity, uniqueness, novelty and stability of what a model generates."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "tutorials/03_train_and_finetune.ipynb")
print("wrote tutorials/03_train_and_finetune.ipynb")
