"""The bundled set with cells up to 52 atoms, "mp-bundled-52": mp-bundled-20 unchanged plus every other crystal we have.

    mp-bundled-52 = mp-bundled-20 (its 16,712 crystals, each in the split it has there)
                  + the new rows of NEW_FILES that pass the same filters with ≤ 52 atoms
                    (e_above_hull ≤ 0.08 eV/atom, formation energy ≤ 2 eV/atom, no noble gas / Tc / Pm / Z ≥ 84),
                    less those whose material_id is already in, less those that structurally match a crystal
                    already in (any split) or an earlier new row

New rows (``mp20_extra/mp20_rows.csv.gz``: MP-20 rows the 20-atom set lacks; ``mp20_extra/mp40_rows.csv.gz``: MP
crystals with ≤ 40 atoms; ``mpts_52/``: MPTS-52 rows with 21–52 atoms, which mp-bundled-20 leaves out) get a
split from a seeded hash of their material id (:func:`~mattergen_kit.data.bundled.split_of` with
``SPLIT_SEED_52``), so adding them moves no old crystal and every old figure stays comparable.

Structure matching (``StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)``, the novelty matcher of
evaluation/matching.py) compares only crystals of the same reduced formula, so it is cheap; it runs once, in
``tools/build_bundled_52.py``, which records every new row's fate in ``datasets/splits/mp-bundled-52.csv``
(material_id, split ∈ {train, val, test, duplicate}, duplicate_of). The loader reads that record: it never runs
the matcher, and it refuses a record that lacks a new row of the raw data (rerun the tool and commit the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mattergen_kit.data.csv_table import _csv_rows, _read_table
from mattergen_kit.data.paths import source_path
from mattergen_kit.data.report import LoadReport, Skip

__all__ = ["LARGE_NAME", "LARGE_MAX_ATOMS", "NEW_FILES", "SPLIT_SEED_52", "large_splits_file", "new_row_records",
           "read_large_splits", "structure_duplicates", "MATCHER_SETTINGS"]

LARGE_NAME = "mp-bundled-52"
LARGE_MAX_ATOMS = 52
SPLIT_SEED_52 = "mattergen_kit/mp-bundled-52/v1"
#: the raw files the new rows come from, in the order duplicates are resolved (an earlier row wins)
NEW_FILES = ("mp20_extra/mp20_rows.csv.gz", "mp20_extra/mp40_rows.csv.gz", "mpts_52/val.csv.gz", "mpts_52/test.csv.gz")
#: what two crystals must share to count as the same (evaluation/matching.py's novelty matcher)
MATCHER_SETTINGS = dict(ltol=0.2, stol=0.3, angle_tol=5)
SPLIT_VALUES = ("train", "val", "test", "duplicate")


def large_splits_file(root: Path) -> Path:
    return Path(root) / "splits" / f"{LARGE_NAME}.csv"


def new_row_records(root: Path, known: dict[str, str], filters: dict, report: LoadReport) -> tuple[list, dict]:
    """Records (for :func:`~mattergen_kit.data.parsing.process_records`) of the rows of NEW_FILES that pass
    ``filters`` and whose material_id is neither in ``known`` (mp-bundled-20's ids → their source file) nor in an
    earlier new row; ``props[(file, row)]`` are their source labels. Every row left out is listed in ``report``,
    except the rows that are themselves members of mp-bundled-20 (same id, same file): those are counted there."""
    seen = set(known)
    records, props = [], {}
    for rel in NEW_FILES:
        df = _read_table(source_path(rel, root))
        sub = LoadReport()
        recs, rows_props = _csv_rows(df, source_path(rel, root), rel, sub, "cif", filters)
        report.skipped.extend(sub.skipped)
        for rec in recs:
            row = rec[0]
            given = rows_props[row]
            mid = str(given.get("material_id"))
            if known.get(mid) == rel:  # this very row is in mp-bundled-20
                continue
            if mid in seen:
                where = f"mp-bundled-20, from {known[mid]}" if mid in known else "an earlier new row"
                report.skipped.append(Skip(rel, row, f"duplicate material_id (already in {where})", "duplicate", mid))
                continue
            seen.add(mid)
            records.append(((rel, row),) + rec[1:])
            spacegroup = given.get("spacegroup", given.get("space_group_number"))
            props[(rel, row)] = {"material_id": mid, "band_gap": given.get("band_gap"),
                                 "formation_energy_per_atom": given.get("formation_energy_per_atom"),
                                 "e_above_hull": given.get("e_above_hull"), "spacegroup": spacegroup}
    return records, props


def read_large_splits(root: Path) -> pd.DataFrame:
    """The record of the new rows (material_id, split, duplicate_of); a clear error when absent or malformed."""
    path = large_splits_file(root)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it records the split of every new row of {LARGE_NAME}; "
                                "restore it with `git checkout -- datasets/splits` or rebuild it with "
                                "`python tools/build_bundled_52.py`")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(table.columns) != ["material_id", "split", "duplicate_of"]:
        raise ValueError(f"{path} must have columns material_id,split,duplicate_of (got {list(table.columns)})")
    bad = sorted(set(table.split) - set(SPLIT_VALUES))
    if bad:
        raise ValueError(f"{path}: unknown split values {bad}; allowed {SPLIT_VALUES}")
    return table


def structure_duplicates(existing: list, new: list, progress: bool = True) -> dict[int, int]:
    """``{i: j}``: new crystal i structurally matches crystal j (an index into ``existing + new[:i]``).

    ``existing`` and ``new`` are lists of pymatgen Structures; a new crystal is compared with every existing
    crystal and every earlier new crystal of the same reduced formula (``MATCHER_SETTINGS``); the first match wins.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from tqdm.auto import tqdm

    matcher = StructureMatcher(**MATCHER_SETTINGS)
    by_formula: dict[str, list[int]] = {}
    for j, s in enumerate(existing):
        by_formula.setdefault(s.composition.reduced_formula, []).append(j)
    out = {}
    for i, s in enumerate(tqdm(new, desc="structure matching", disable=not progress, mininterval=2.0)):
        formula = s.composition.reduced_formula
        candidates = by_formula.setdefault(formula, [])
        for j in candidates:
            other = existing[j] if j < len(existing) else new[j - len(existing)]
            if matcher.fit(s, other):
                out[i] = j
                break
        else:
            candidates.append(len(existing) + i)
    return out


def size_band(num_atoms: np.ndarray) -> np.ndarray:
    """'1–20', '21–40', '41–52' for each N."""
    n = np.asarray(num_atoms)
    return np.where(n <= 20, "1–20", np.where(n <= 40, "21–40", "41–52"))
