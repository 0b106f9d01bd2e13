"""Writes tutorials/03_conditioning.ipynb (kept as a script so the notebook's source is reviewable)."""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# 03 · Property conditioning: steer generation, and fine-tune on your own property

A conditioned model has an **adapter** (MatterGen's zero-initialised mix-in) that feeds property embeddings into
every layer of the denoiser. Each property has a learned *null* embedding for "unknown", so one checkpoint
serves any subset of its properties, and with none it is the unconditional model. Sampling combines the
unconditional and the conditional network with classifier-free guidance, `out = u + γ (c − u)`.

This notebook: the property registry and the labels of the bundled data; a fine-tune on a property of *your*
table (here: "has oxygen", made from bundled rows); sampling with conditions; the checks that run before any
sampling."""),
    nbf.v4.new_code_cell("""import os
# Small settings when the tests run this notebook; raise them for real use.
SMALL = bool(os.environ.get("MGK_SMALL"))
NUM = int(os.environ.get("MGK_NUM", 16))           # crystals per setting
STEPS = int(os.environ.get("MGK_STEPS", 200))      # sampler steps
FINETUNE_STEPS = 20 if SMALL else 400              # fine-tuning steps (the bundled base: ~1 s each on one core)
OUT = os.environ.get("MGK_OUT", "conditioning_out")
import torch
torch.set_num_threads(1)"""),
    nbf.v4.new_markdown_cell("## The properties and their labels"),
    nbf.v4.new_code_cell("""import pandas as pd
from mattergen_kit.conditioning import PROPERTIES

pd.DataFrame([{"name": s.name, "kind": s.kind, "unit": s.unit, "valid": f"{s.low} … {s.high}",
               "log10": s.log10, "ML label": s.ml_label, "description": s.description}
              for s in PROPERTIES.values()])"""),
    nbf.v4.new_code_cell("""from mattergen_kit.conditioning.labels import all_labels

labels = all_labels()        # datasets/labels/: structure + MP labels, and the CHGNet ML labels so far
labels.drop(columns=["material_id", "split"]).notna().sum().rename("labelled crystals").to_frame()"""),
    nbf.v4.new_markdown_cell("""## Fine-tune on your own property
Any CDVAE-format table (a `cif` column plus property columns) works. We make one from bundled rows: 12 oxides
labelled `yes` and 12 oxygen-free crystals labelled `no`, and fine-tune the bundled model on it (all weights
plus a fresh adapter; the label is dropped 20 % of the time so the model also stays unconditional)."""),
    nbf.v4.new_code_cell("""import numpy as np
from mattergen_kit.datasets import data_root

rows = pd.read_csv(data_root() / "mp20_biternary" / "val.csv.gz", nrows=400)
oxide = np.array(["'O'" in e for e in rows["elements"]])
table = pd.concat([rows[oxide].head(12), rows[~oxide].head(12)])
table["has_oxygen"] = ["yes"] * 12 + ["no"] * 12
os.makedirs(OUT, exist_ok=True)
table_path = os.path.join(OUT, "my_table.csv")
table[["material_id", "cif", "has_oxygen"]].to_csv(table_path, index=False)
table[["material_id", "pretty_formula", "has_oxygen"]].head()"""),
    nbf.v4.new_code_cell("""import mattergen_kit as mk

path = mk.finetune(table_path, "has_oxygen", base="bundled", out=os.path.join(OUT, "finetune"),
                   max_steps=FINETUNE_STEPS, max_time_minutes=None, lr=3e-4, batch_size=12, progress=False)
print(open(os.path.join(OUT, "finetune", "MODEL_CARD.md")).read())"""),
    nbf.v4.new_markdown_cell("""## Sample with the condition
γ = 0 is the unconditional model (the condition is ignored), larger γ follows the condition more strongly.
We count the share of oxygen atoms in the samples for each label."""),
    nbf.v4.new_code_cell("""model = mk.load_model(path)

def oxygen_share(structures):
    atoms = [site.specie.symbol for s in structures for site in s]
    return sum(a == "O" for a in atoms) / max(len(atoms), 1)

rows = []
for label in ["yes", "no"]:
    for gamma in [0.0, 2.0]:
        cs = model.generate(NUM, seed=0, steps=STEPS, conditions={"has_oxygen": label}, guidance_scale=gamma,
                            progress=False)
        rows.append({"has_oxygen": label, "γ": gamma, "O share of atoms": round(oxygen_share(cs), 3),
                     "formulas": ", ".join(s.composition.reduced_formula for s in cs[:4])})
pd.DataFrame(rows)"""),
    nbf.v4.new_markdown_cell("""## Composition control and a chemical system
A chemical-system condition also masks the sampler to the system's elements (no sample leaves it); a fixed
formula gives crystal-structure prediction (the atoms are given, lattice and positions generated). These work
with any model; `chemical_system` as a *condition* needs a model trained on it (the conditioned bundled
model), `allowed_elements` is the mask alone."""),
    nbf.v4.new_code_cell("""cs = model.generate(4, seed=1, steps=STEPS, allowed_elements=["Li", "Fe", "P", "O"], progress=False)
print([s.composition.reduced_formula for s in cs])
cs = model.generate(4, seed=1, steps=STEPS, formula="Li2Fe2O4", progress=False)
print([s.composition.formula for s in cs])"""),
    nbf.v4.new_markdown_cell("## Checked before any sampling"),
    nbf.v4.new_code_cell("""for bad in [dict(conditions={"band_gap": 1.0}),                      # not a property of this model
            dict(conditions={"has_oxygen": "maybe"}),                  # not a known category
            dict(conditions={"has_oxygen": "yes"}, guidance_scale=-1)]:
    try:
        model.generate(1, steps=STEPS, **bad)
    except ValueError as err:
        print("ValueError:", err)
base = mk.load_model()                                                 # the base model has no conditioning
try:
    base.generate(1, steps=STEPS, conditions={"band_gap": 3.0}, guidance_scale=2.0)
except ValueError as err:
    print("ValueError:", err)"""),
    nbf.v4.new_markdown_cell("""## The conditioned bundled model
`mk.generate(n, conditions={...}, guidance_scale=2.0)` without a model uses
`mattergen_kit/checkpoints/mp_bundled_20_conditioned.pt`, fine-tuned from the bundled base on all eight
properties (`python tools/build_conditioned_model.py`)."""),
    nbf.v4.new_code_cell("""from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

if BUNDLED_CONDITIONED_CHECKPOINT.is_file():
    cs = mk.generate(NUM, seed=0, steps=STEPS, conditions={"space_group": 225, "band_gap": 3.0},
                     guidance_scale=2.0, progress=False)
    from mattergen_kit.conditioning.adherence import measure
    print("space groups (spglib 0.1):", measure(cs, "space_group"))
else:
    print("not built yet:", BUNDLED_CONDITIONED_CHECKPOINT.name)"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "tutorials/03_conditioning.ipynb")
print("wrote tutorials/03_conditioning.ipynb")
