"""Writes tutorials/02_data.ipynb (kept as a script so the notebook's source is reviewable)."""
import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell("""# 02 · Data: the bundled set, MP-20, Materials Project, Alexandria, ICSD and your own files

Every loader returns a `CrystalDataset`: canonical cells (`.structures`), one row of labels per crystal
(`.properties`) and a `.report` of what was kept and what was skipped, with the file, the row and the reason.

This notebook: the bundled set **mp-bundled-20** and a few plots of it; the full MP-20 (downloaded and verified);
the Materials Project through `mp-api` with your API key (cached, so it re-runs offline); and the file loaders
(Alexandria dumps, an ICSD CIF export, a folder of CIF/extxyz, a CDVAE-format CSV), each fed with small files
that we write here from bundled crystals — with a few broken rows on purpose, to show the report.

Nothing in this notebook downloads anything unless you have set `MP_API_KEY` (and are not in the tests' small mode)."""),
    nbf.v4.new_code_cell("""import os
# Small settings when the tests run this notebook (they also never touch the network).
SMALL = bool(os.environ.get("MGK_SMALL"))
OUT = os.environ.get("MGK_OUT", "data_out")
os.makedirs(OUT, exist_ok=True)

import warnings
warnings.filterwarnings("ignore")                # pymatgen's CIF warnings about our deliberately broken files
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from mattergen_kit import datasets"""),
    nbf.v4.new_markdown_cell("""## 1 · The bundled set
Real Materials Project data shipped with the package: MP-20's binary/ternary val/test rows plus MPTS-52 rows with
≤ 20 atoms, split train/val/test by a fixed hash of the material id (`datasets/README.md`). The first call parses
and canonicalises everything and writes a tensor cache in `datasets/cache/` (a few minutes on 2 cores); later
calls read the cache in seconds. The raw files are checked against `datasets/SHA256SUMS` on every call."""),
    nbf.v4.new_code_cell("""full = datasets.load_bundled("all", progress=False)
full"""),
    nbf.v4.new_markdown_cell("""The report says what the loader left out of the raw rows, and why (too many atoms, above the hull,
a duplicate material id, an element the model does not generate). `to_frame()` gives every skipped row."""),
    nbf.v4.new_code_cell("""print(full.report)
full.report.to_frame().groupby(["kind", "source"]).size().rename("rows").to_frame()"""),
    nbf.v4.new_code_cell("""props = full.properties
print(props["split"].value_counts().to_dict())
props[["material_id", "formula", "num_atoms", "spacegroup", "band_gap", "formation_energy_per_atom", "e_above_hull",
       "hhi_production", "split"]].head()"""),
    nbf.v4.new_markdown_cell("### Number of atoms, number of elements and space groups per split"),
    nbf.v4.new_code_cell("""from pymatgen.symmetry.groups import SpaceGroup

def n_elements(ds):
    return np.array([len(set(ds.atom_types[a:b])) for a, b in zip(ds.offsets[:-1], ds.offsets[1:])])

def crystal_system(number):
    for name, top in [("triclinic", 2), ("monoclinic", 15), ("orthorhombic", 74), ("tetragonal", 142),
                      ("trigonal", 167), ("hexagonal", 194), ("cubic", 230)]:
        if number <= top:
            return name

splits = {s: full.subset(props["split"].to_numpy() == s, name=s) for s in ["train", "val", "test"]}
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for name, ds in splits.items():
    axes[0].hist(ds.num_atoms, bins=np.arange(0.5, 21.5), histtype="step", density=True, lw=1.5,
                 label=f"{name} ({len(ds)})")
    axes[1].hist(n_elements(ds), bins=np.arange(0.5, 7.5), histtype="step", density=True, lw=1.5, label=name)
axes[0].set_xlabel("atoms in the canonical cell"); axes[1].set_xlabel("distinct elements")
for ax in axes[:2]:
    ax.set_ylabel("share of crystals"); ax.legend(fontsize=8)
top = props["spacegroup"].value_counts().head(15)
axes[2].bar([f"{SpaceGroup.from_int_number(int(n)).symbol} ({int(n)})" for n in top.index], top.values / len(props))
axes[2].tick_params(axis="x", rotation=70, labelsize=7); axes[2].set_ylabel("share of crystals (all splits)")
axes[2].set_title("15 most common space groups")
fig.suptitle(f"mp-bundled-20: {len(full)} crystals", fontsize=10)
fig.tight_layout()
props["spacegroup"].map(crystal_system).value_counts().rename("crystals").to_frame().T"""),
    nbf.v4.new_markdown_cell("""## 2 · The full MP-20 (needs internet once)
```bash
mattergen-kit fetch-data mp20            # or: datasets.fetch_mp20(); datasets.load_mp20("train", download=True)
```
Each of CDVAE's `data/mp_20/{train,val,test}.csv` is downloaded to a temporary file next to its destination,
its **git blob id** (sha1 of `blob <size>\\0` + content) is compared with the one recorded in
`datasets/PROVENANCE.md`, and only then is it renamed into place — a partial, corrupt or different file raises
`DataIntegrityError` and leaves nothing behind. `load_mp20(split)` checks the blob id again before reading.
Here we only look whether the files are already there."""),
    nbf.v4.new_code_cell("""from mattergen_kit.data.mp20 import MP20_BLOB_IDS, mp20_root

root = mp20_root()
present = {split: (root / f"{split}.csv").is_file() for split in MP20_BLOB_IDS}
print("MP-20 folder:", root)
print("present:", present)
if present["val"]:
    mp20_val = datasets.load_mp20("val", progress=False)     # verifies the blob id first
    print(mp20_val.report)
else:
    print("Not downloaded: run `mattergen-kit fetch-data mp20` (about 50 MB) to train or evaluate on full MP-20.")"""),
    nbf.v4.new_markdown_cell("""## 3 · Materials Project through `mp-api` (needs an API key)
Get a free key at <https://materialsproject.org/api> and `export MP_API_KEY=...` before starting Jupyter.
`load_materials_project` queries the summary endpoint (structures plus band gap, formation energy, E above hull,
magnetisation, bulk modulus and MP's symmetry) and caches the raw documents under `datasets/cache/materials_project/`,
keyed by the query: a cached query is answered offline, with or without a key. Without a key and without a cache
it raises `MPAccessError` at once, saying how to get a key; an unreachable server raises it within `timeout` seconds.

In the tests' small mode the key is hidden from the loader, so only the cache can answer."""),
    nbf.v4.new_code_cell("""from mattergen_kit.datasets import MPAccessError

query = dict(chemsys="Li-Fe-O", num_sites=(1, 20), energy_above_hull=(0.0, 0.1))
use_network = bool(os.environ.get("MP_API_KEY")) and not SMALL
hidden_key = None if use_network else os.environ.pop("MP_API_KEY", None)
try:
    mp = datasets.load_materials_project(**query, progress=False)
    print(mp.report)
    display(mp.properties[["material_id", "formula", "spacegroup", "band_gap", "e_above_hull",
                           "magnetic_density", "bulk_modulus_vrh"]].head(10))
except MPAccessError as err:
    print("Materials Project not queried:", err)
    print("Set MP_API_KEY and re-run this cell; the result is then cached for offline use.")
finally:
    if hidden_key:
        os.environ["MP_API_KEY"] = hidden_key"""),
    nbf.v4.new_markdown_cell("""## 4 · Files: Alexandria, ICSD, a CIF/extxyz folder and a CSV
We write small but real inputs from bundled **test** crystals with pymatgen, each with a few bad rows, and read
them back. With your own data, point the same loaders at your files."""),
    nbf.v4.new_code_cell("""test = datasets.load_bundled("test", progress=False)
picks = test.structures[:8]
labels = test.properties.iloc[:8]
[s.composition.reduced_formula for s in picks]"""),
    nbf.v4.new_markdown_cell("""### Alexandria dumps
Alexandria (<https://alexandria.icams.rub.de/>) publishes `alexandria_XXX.json.bz2` files holding
`{"entries": [ComputedStructureEntry dicts]}`. The loader streams them (a file is hundreds of MB decompressed)
and filters on size and `e_above_hull` *before* building a structure. Our dump: 8 good entries, one with 24
atoms, one 0.3 eV/atom above the hull and one whose structure is missing."""),
    nbf.v4.new_code_cell("""import bz2, json
from pymatgen.entries.computed_entries import ComputedStructureEntry

entries = []
for k, (s, row) in enumerate(zip(picks, labels.itertuples())):
    data = {"mat_id": f"agm{k:06d}", "e_above_hull": float(row.e_above_hull),
            "e_form": float(row.formation_energy_per_atom), "band_gap_ind": float(row.band_gap),
            "band_gap_dir": float(row.band_gap), "total_mag": 0.0, "spg": int(row.spacegroup)}
    entries.append(ComputedStructureEntry(s, energy=-5.0 * len(s), data=data).as_dict())
big = ComputedStructureEntry(picks[0] * (2, 2, 2) if len(picks[0]) * 8 > 20 else picks[0] * (3, 3, 3),
                             energy=-1.0, data={"mat_id": "agm-big", "e_above_hull": 0.0}).as_dict()
unstable = ComputedStructureEntry(picks[1], energy=-1.0, data={"mat_id": "agm-unstable", "e_above_hull": 0.3}).as_dict()
broken = dict(entries[2], structure=None, data={"mat_id": "agm-broken", "e_above_hull": 0.0})
alex_path = os.path.join(OUT, "alexandria_000.json.bz2")
with bz2.open(alex_path, "wt") as f:
    json.dump({"entries": entries + [big, unstable, broken]}, f)

alex = datasets.load_alexandria(alex_path, max_atoms=20, e_above_hull_max=0.1, workers=1, progress=False)
print(alex.report)
alex.properties[["material_id", "formula", "num_atoms", "e_above_hull", "formation_energy_per_atom", "band_gap",
                 "spacegroup"]]"""),
    nbf.v4.new_markdown_cell("""### An ICSD export
ICSD is licensed, so nothing of it ships here; `load_icsd` reads *your* CIF export (a folder or a zip).
The CIFs' symmetry operations are applied, `material_id` comes from `_database_code_ICSD`, partial occupancies
are skipped (`disorder="skip"`) or ordered in a small supercell (`disorder="order"`), and structural duplicates
within a formula are listed in the report. Our export: 6 crystals, a supercell copy of one of them (a
duplicate), a crystal with Zn/Cd 50/50 on its Zn sites and an empty file."""),
    nbf.v4.new_code_cell("""from pymatgen.io.cif import CifWriter

icsd_dir = os.path.join(OUT, "icsd_export")
os.makedirs(icsd_dir, exist_ok=True)

def write_icsd(structure, code, name):
    lines = str(CifWriter(structure, symprec=0.1)).splitlines()   # a symmetrised CIF, as ICSD exports are
    at = next(i for i, line in enumerate(lines) if line.startswith("data_"))
    lines.insert(at + 1, f"_database_code_ICSD {code}")
    with open(os.path.join(icsd_dir, name), "w") as f:
        f.write("\\n".join(lines) + "\\n")

for k, s in enumerate(picks[:6]):
    write_icsd(s, 100000 + k, f"icsd_{100000 + k}.cif")
write_icsd(picks[0] * (1, 1, 2), 100099, "icsd_100099.cif")              # the same crystal, as a supercell
disordered = picks[0].copy()                                            # Zn3N2 with Zn half Cd on every Zn site
disordered.replace_species({"Zn": {"Zn": 0.5, "Cd": 0.5}})
write_icsd(disordered, 100100, "icsd_100100.cif")                       # partial occupancy
open(os.path.join(icsd_dir, "icsd_100101.cif"), "w").close()            # an empty file

icsd = datasets.load_icsd(icsd_dir, disorder="skip", workers=1, progress=False)
print(icsd.report)
icsd.properties[["material_id", "file", "formula", "num_atoms", "spacegroup"]]"""),
    nbf.v4.new_markdown_cell("""### A folder (or zip) of CIF / extxyz files
`load_cif_folder` reads every `.cif`, `.extxyz` and `.xyz` below a folder or inside a zip; a multi-frame extxyz
gives one crystal per frame. Our folder: 3 CIFs, one extxyz with 3 frames, a CIF with two atoms 0.2 Å apart and
a file that is not a CIF at all."""),
    nbf.v4.new_code_cell("""from pymatgen.io.ase import AseAtomsAdaptor
from ase.io import write as ase_write

folder = os.path.join(OUT, "my_cifs")
os.makedirs(folder, exist_ok=True)
for k, s in enumerate(picks[:3]):
    s.to(filename=os.path.join(folder, f"mine_{k}.cif"))
ase_write(os.path.join(folder, "frames.extxyz"), [AseAtomsAdaptor.get_atoms(s) for s in picks[3:6]], format="extxyz")
clash = picks[6].copy()
clash.append(clash[0].specie, clash[0].coords + np.array([0.2, 0, 0]), coords_are_cartesian=True)
clash.to(filename=os.path.join(folder, "clash.cif"))
with open(os.path.join(folder, "notes.cif"), "w") as f:
    f.write("these are my notes, not a CIF\\n")

mine = datasets.load_cif_folder(folder, workers=1, progress=False)
print(mine.report)
mine.properties[["material_id", "file", "formula", "num_atoms", "spacegroup"]]"""),
    nbf.v4.new_markdown_cell("""### A CDVAE-format CSV
Any table with a `cif` column; other columns are kept as labels (`energy_above_hull` → `e_above_hull`,
`spacegroup.number` → `spacegroup`, ...). A CIF that does not parse or a non-number in a numeric column skips that
row, with its 0-based data row in the report. (`cache=False`: a real table is cached in `datasets/cache/`, keyed by
its sha256.)"""),
    nbf.v4.new_code_cell("""table = pd.DataFrame({"material_id": list(labels["material_id"]), "cif": [s.to(fmt="cif") for s in picks],
                      "band_gap": list(labels["band_gap"]), "energy_above_hull": list(labels["e_above_hull"])})
table.loc[2, "band_gap"] = "2.1 eV"                  # a non-number in a numeric column
table.loc[5, "cif"] = "data_broken\\n_cell_length_a 3.0\\n"   # a CIF without atoms
csv_path = os.path.join(OUT, "my_table.csv")
table.to_csv(csv_path, index=False)

mine_csv = datasets.load_csv(csv_path, cache=False, workers=1, progress=False)
print(mine_csv.report)
mine_csv.properties[["material_id", "formula", "band_gap", "e_above_hull", "spacegroup", "hhi_production"]]"""),
    nbf.v4.new_markdown_cell("""## 5 · The bad rows, all together
Every loader's `.report.to_frame()` has the same columns: `source` (file), `row`, `reason`, `kind` (`invalid`:
bad input; `filtered`: a policy such as size or energy; `duplicate`) and `material_id`. Check it before
training: a loader never drops a row silently."""),
    nbf.v4.new_code_cell("""bad = pd.concat([ds.report.to_frame().assign(loader=name) for name, ds in
                 [("alexandria", alex), ("icsd", icsd), ("cif folder", mine), ("csv", mine_csv)]], ignore_index=True)
pd.set_option("display.max_colwidth", 110)
bad[["loader", "source", "row", "kind", "material_id", "reason"]]"""),
    nbf.v4.new_markdown_cell("""### Partial occupancy, ordered instead of skipped
`disorder="order"` orders the disordered entry (pymatgen's `OrderDisorderedStructureTransformation`, lowest Ewald
energy) and counts it in `report.notes`; ordered rows carry `was_disordered = True`."""),
    nbf.v4.new_code_cell("""icsd_ordered = datasets.load_icsd(icsd_dir, disorder="order", workers=1, progress=False)
print(icsd_ordered.report)
icsd_ordered.properties.loc[icsd_ordered.properties["was_disordered"].astype(bool),
                            ["material_id", "formula", "num_atoms"]]"""),
    nbf.v4.new_markdown_cell("""## Use them
A `CrystalDataset` feeds training directly (`torch.utils.data.DataLoader(ds, collate_fn=CrystalBatch.collate)`),
`datasets.CrystalDataset.concat([...])` merges loaders, and `TrainConfig(dataset="csv" | "cif" | "alexandria" |
"mp20", data_path=...)` trains on them — see `tutorials/03_train_and_finetune.ipynb`."""),
    nbf.v4.new_code_cell("""merged = datasets.CrystalDataset.concat([alex, icsd, mine, mine_csv], name="my data")
print(merged, "\\n", merged.report)
batch = merged.to_batch()
print("a batch of", int(batch.num_atoms.numel()), "crystals,", int(batch.atom_types.numel()), "atoms")"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "tutorials/02_data.ipynb")
print("wrote tutorials/02_data.ipynb")
