"""Conditioning labels of the bundled crystals, and how a dataset gets them.

Label sources (design.md §5):

    chemical_system   from the structure: its element symbols sorted alphabetically, joined by "-"
    space_group       from the structure: spglib international number, symprec 0.1 Å, on the canonical cell
    hhi_production    from the structure: pymatgen HHIModel.get_hhi — the per-element production HHI of
                      pymatgen's table (Gaultois et al. 2013) averaged with each element's WEIGHT fraction,
                      HHI = Σ_e w_e HHI_e, w_e = n_e m_e / Σ n m; NaN when an element has no HHI value
    band_gap, formation_energy_per_atom, e_above_hull
                      Materials Project DFT columns of the bundled files (band gap NaN for MPTS-52 rows)
    magnetic_density  ML estimate: Σ_i |m_i| / V (μB/Å³), CHGNet site magnetic moments on the given
                      structure (label_job.py); MatterGen used DFT total magnetisation / volume
    bulk_modulus      ML estimate for MP structures: Birch–Murnaghan fit of CHGNet energies (label_job.py);
                      DFT (AFLOW AEL-AGL) for the AFLOW set

Tables (keyed by ``material_id``, committed under ``datasets/labels/``, provenance in its README):

    mp-bundled-20-labels.csv.gz     the structure and MP labels of all bundled crystals (``build_label_table``)
    mp-bundled-20-ml-labels.csv     ML labels, long format (material_id, property, value, ...), appended by
                                    the resumable ``python -m mattergen_kit.studies.label_job``

NaN in a table = no label → the property's null embedding in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mattergen_kit.data.paths import data_root

LABELS_DIR = "labels"
LABEL_TABLE = "mp-bundled-20-labels.csv.gz"
ML_LABEL_TABLE = "mp-bundled-20-ml-labels.csv"
MP_COLUMNS = ("band_gap", "formation_energy_per_atom", "e_above_hull")
TABLE_COLUMNS = ("material_id", "split", "chemical_system", "space_group", "hhi_production", *MP_COLUMNS)


def labels_dir() -> Path:
    return data_root() / LABELS_DIR


def structure_labels(structure) -> dict:
    """chemical_system, space_group (spglib, symprec 0.1) and hhi_production of one pymatgen Structure."""
    from mattergen_kit.data.parsing import chemical_system, hhi, spacegroup_number

    comp = structure.composition
    sg = spacegroup_number(structure, symprec=0.1)
    return {"chemical_system": chemical_system(comp), "space_group": sg if sg > 0 else np.nan,
            "hhi_production": hhi(comp)[0]}


def build_label_table(dataset=None, progress: bool = True) -> pd.DataFrame:
    """The structure and MP labels of ``dataset`` (default: all bundled crystals), one row per material_id."""
    from tqdm.auto import tqdm

    if dataset is None:
        from mattergen_kit.datasets import load_bundled

        dataset = load_bundled("all", progress=progress)
    props = dataset.properties
    rows = []
    for i, s in enumerate(tqdm(dataset.structures, desc="structure labels", disable=not progress)):
        row = {"material_id": props["material_id"].iloc[i],
               "split": props["split"].iloc[i] if "split" in props else None, **structure_labels(s)}
        for col in MP_COLUMNS:
            row[col] = float(props[col].iloc[i]) if col in props else np.nan
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table["space_group"] = table["space_group"].astype("Int64")
    return table


def write_label_table(table: pd.DataFrame, path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else labels_dir() / LABEL_TABLE
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g", compression={"method": "gzip", "mtime": 0})
    return path


def read_label_table(path: str | Path | None = None) -> pd.DataFrame:
    """The committed structure + MP label table (material_id, split, chemical_system, space_group, ...)."""
    path = Path(path) if path is not None else labels_dir() / LABEL_TABLE
    if not path.is_file():
        raise FileNotFoundError(f"no label table at {path}: build it with "
                                "`python -m mattergen_kit.conditioning.labels` (about 2 minutes)")
    table = pd.read_csv(path, dtype={"material_id": str, "chemical_system": str})
    table["space_group"] = table["space_group"].astype("Int64")
    return table


def read_ml_labels(path: str | Path | None = None) -> pd.DataFrame:
    """ML labels as a wide table: material_id → magnetic_density, bulk_modulus (NaN where not labelled or failed)."""
    path = Path(path) if path is not None else labels_dir() / ML_LABEL_TABLE
    if not path.is_file():
        return pd.DataFrame(columns=["material_id"])
    long = pd.read_csv(path, dtype={"material_id": str})
    long = long[long["status"] == "ok"]
    wide = long.pivot_table(index="material_id", columns="property", values="value", aggfunc="last")
    return wide.reset_index()


def all_labels(table: str | Path | None = None, ml_table: str | Path | None = None) -> pd.DataFrame:
    """Structure + MP labels joined with the ML labels, keyed by material_id."""
    base = read_label_table(table)
    ml = read_ml_labels(ml_table)
    return base.merge(ml, on="material_id", how="left") if len(ml.columns) > 1 else base


def attach_labels(dataset, names, labels: pd.DataFrame | None = None):
    """Add the label columns ``names`` to ``dataset.properties`` (in place; returns the dataset).

    Values the dataset already has are kept (e.g. the AFLOW set's DFT ``bulk_modulus``); missing columns and
    the NaN entries of existing ones come from ``labels`` (default :func:`all_labels`) matched on
    ``material_id`` (crystals without a row stay NaN = the null embedding).
    """
    props = dataset.properties
    todo = [n for n in names if n not in props.columns or props[n].isna().any()]
    if not todo:
        return dataset
    if "material_id" not in props.columns:
        raise ValueError(f"the dataset has no {todo} labels and no material_id to look them up by")
    labels = labels if labels is not None else all_labels()
    absent = [n for n in todo if n not in labels.columns and n not in props.columns]
    if absent:
        raise ValueError(f"no {absent} labels in the label tables (columns: {sorted(labels.columns)}); "
                         "run the labelling job (python -m mattergen_kit.studies.label_job) first")
    table = labels.drop_duplicates("material_id").set_index("material_id")
    ids = props["material_id"].astype(str)
    for name in todo:
        if name not in table.columns:
            continue  # the dataset's own partial column stays as it is
        values = table[name].reindex(ids)
        if name == "space_group":
            values = values.astype("Float64").astype(float)
        values = values.to_numpy()
        if name in props.columns:  # fill only the gaps
            own = props[name].to_numpy()
            values = np.where(pd.isna(own), values, own)
        props[name] = values
    dataset._prop_cache = None  # CrystalDataset caches its per-column tensors
    if len(dataset) and not set(todo) <= set(dataset[0].properties):
        raise RuntimeError("attach_labels: the dataset's batches do not show the new columns (its column cache "
                           "was not reset); conditioning/labels.py must follow CrystalDataset's caching")
    return dataset


if __name__ == "__main__":  # python -m mattergen_kit.conditioning.labels: rebuild the committed table
    t = build_label_table()
    print(f"wrote {write_label_table(t)} ({len(t)} rows)")
    print(t.notna().sum().to_string())
