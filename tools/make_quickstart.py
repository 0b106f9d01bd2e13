"""Writes tutorials/01_quickstart.ipynb (kept as a script so the notebook's source is reviewable)."""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# 01 · Quickstart: generate crystals with the bundled model

This notebook loads the model shipped with mattergen_kit, generates a few crystals, looks at them
(a 3D view that needs no internet, a picture grid and a table) and saves them as CIF files.

The model reverses three noising processes at once (atom types, fractional coordinates, lattice);
see `docs/architecture.md` and the README for what it was trained on and how good it is."""),
    nbf.v4.new_code_cell("""import os
# Small settings when the tests run this notebook; raise them for real use.
NUM = int(os.environ.get("MGK_NUM", 16))        # crystals to generate
STEPS = int(os.environ.get("MGK_STEPS", 200))   # predictor-corrector steps (1000 = MatterGen's reference)
SEED = 0
OUT = os.environ.get("MGK_OUT", "quickstart_out")"""),
    nbf.v4.new_code_cell("""import mattergen_kit as mk

model = mk.load_model()            # the bundled checkpoint; pass a path for your own
print(model.path.name, "—", model.meta.get("lineage") or f"trained for {model.meta.get('global_step')} steps")
print(model.num_atoms_prior)"""),
    nbf.v4.new_markdown_cell("""## Generate
`model.generate` returns pymatgen `Structure`s. The same seed gives the same crystals. A progress bar
shows the sampler's steps."""),
    nbf.v4.new_code_cell("""structures = model.generate(NUM, seed=SEED, steps=STEPS)
len(structures)"""),
    nbf.v4.new_markdown_cell("## Look at them: a table, one crystal in 3D (drag to rotate), and a grid"),
    nbf.v4.new_code_cell("""import pandas as pd
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

def describe(s):
    try:
        sg = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_symbol()
    except Exception:  # spglib can fail on badly distorted cells
        sg = "?"
    return {"formula": s.composition.reduced_formula, "atoms": len(s), "volume (Å³)": round(s.volume, 1),
            "density (g/cm³)": round(float(s.density), 2), "space group": sg}

table = pd.DataFrame([describe(s) for s in structures])
table"""),
    nbf.v4.new_code_cell("""from mattergen_kit.widgets import view
view(structures[0])"""),
    nbf.v4.new_code_cell("""from mattergen_kit.widgets import structure_grid
fig = structure_grid(structures, ncols=8)"""),
    nbf.v4.new_markdown_cell("## Save as CIF files (plus a summary table and the grid picture)"),
    nbf.v4.new_code_cell("""from mattergen_kit.generation import write_samples
written = write_samples(structures, OUT)
print(len(written["cifs"]), "CIF files in", OUT)"""),
    nbf.v4.new_markdown_cell("""## Steer it: the conditioned bundled model
The same call with `conditions` uses the conditioned bundled model (fine-tuned from this one with a property
adapter) and classifier-free guidance of strength γ (`guidance_scale`; MatterGen's advice is 2). Here: cubic
Fm-3m crystals (space group 225) in the Li–Mn–O system, twice: with guidance alone, and with
`enforce_symmetry=True`, which also samples inside a Wyckoff template of the group. Guidance alone steers the
chemistry reliably but rarely lands exactly in a space group (spglib cannot even read some of those cells: "?");
the templates give the group. Either way the composition is the network's: check charge balance (SMACT) before
you trust a formula. How often targets are hit: `tutorials/04_conditioning.ipynb`."""),
    nbf.v4.new_code_cell("""from mattergen_kit.evaluation.properties import spacegroup
from mattergen_kit.evaluation.validity import smact_validity

request = dict(seed=SEED, steps=STEPS, guidance_scale=2.0, conditions={"space_group": 225, "chemical_system": "Li-Mn-O"})
rows = []
for how, enforce in (("guidance", False), ("guidance + template", True)):
    for s in mk.generate(min(NUM, 8), enforce_symmetry=enforce, **request):
        number, symbol = spacegroup(s)             # symprec 0.1 Å; None where spglib fails
        rows.append({"sampler": how, "formula": s.composition.reduced_formula,
                     "space group": f"{symbol} ({number})" if number else "?",
                     "charge balanced (SMACT)": smact_validity(s.composition)})
pd.DataFrame(rows)"""),
    nbf.v4.new_markdown_cell("""## Next
- `mattergen-kit generate --num 64 --out out/` does the same from a shell
  (`--condition space_group=225 --guidance 2` to steer).
- `tutorials/05_evaluation.ipynb` measures validity, uniqueness, novelty and stability of what you generated."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "tutorials/01_quickstart.ipynb")
print("wrote tutorials/01_quickstart.ipynb")
