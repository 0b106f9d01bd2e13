"""ICSD: a user's licensed CIF export (a folder or a .zip of CIFs). We ship no ICSD data.

* symmetry expansion: the CIFs' symmetry operations are applied by pymatgen's ``CifParser``;
* partial occupancy: ``disorder="skip"`` (default) skips such entries, ``disorder="order"`` orders them with
  pymatgen's ``OrderDisorderedStructureTransformation`` (lowest Ewald energy with the CIF's oxidation states,
  else guessed ones, in the smallest supercell up to 2x2x2 in which the occupancies become whole numbers of
  atoms; an entry whose oxidation states cannot be guessed is skipped with that reason); both are
  counted in ``.report`` (skips, or ``report.notes["ordered partial occupancy"]``) and ordered rows carry
  ``was_disordered = True``;
* ``max_atoms`` applies to the primitive (canonical) cell;
* duplicates: within each reduced formula, pymatgen ``StructureMatcher`` (ltol 0.2, stol 0.3, angle_tol 5)
  keeps the first file (sorted by name) and lists the others as duplicates in ``.report``.
``material_id`` is ``icsd-<_database_code_ICSD>`` when the CIF has that tag, else the file stem.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from mattergen_kit.data.dataset import CrystalDataset
from mattergen_kit.data.files import iter_structure_files
from mattergen_kit.data.parsing import StructureError, parse_cif_text, process_records
from mattergen_kit.data.report import LoadReport, Skip, check_load_options

__all__ = ["load_icsd", "order_disordered"]

_CODE = re.compile(r"^_database_code_ICSD\s+(\S+)", re.MULTILINE)


def order_disordered(structure, max_supercell: int = 2):
    """An ordered version of a partially occupied structure (see module docstring); raises StructureError."""
    from pymatgen.transformations.standard_transformations import OrderDisorderedStructureTransformation

    s = structure.copy()
    if not all(getattr(sp, "oxi_state", None) is not None for sp in s.composition):  # the CIF's own states win
        try:
            s.add_oxidation_state_by_guess()
        except Exception as exc:  # e.g. "Charge balance analysis requires integer values in Composition!"
            # Without oxidation states the Ewald ordering below can only fail (with an opaque AttributeError
            # about Element.oxi_state): say what is missing instead.
            detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise StructureError(
                f"partial occupancy: no oxidation states could be guessed for {s.composition.formula} ({detail}); "
                "ordering needs them — give oxidation states in the CIF (_atom_type_oxidation_number) or order "
                "the structure yourself") from None
    trans = OrderDisorderedStructureTransformation(algo=2)
    scales = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2), (2, 2, 1), (2, 1, 2), (1, 2, 2), (2, 2, 2)]
    last = None
    for sc in scales:
        if max(sc) > max_supercell:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ordered = trans.apply_transformation(s * sc)
            ordered.remove_oxidation_states()
            return ordered
        except Exception as exc:  # occupancies not whole in this cell: try a larger one
            last = exc
    raise StructureError(f"partial occupancy could not be ordered within a {max_supercell}x supercell "
                         f"({type(last).__name__}: {str(last)[:120]})")


def load_icsd(path: str | os.PathLike, *, max_atoms: int | None = 20, disorder: str = "skip",
              dedupe: bool = True, workers: int = 2, progress: bool = True, name: str | None = None) -> CrystalDataset:
    """Load an ICSD CIF export (folder or zip); see the module docstring for what is done to each entry."""
    if disorder not in ("skip", "order"):
        raise ValueError(f"disorder must be 'skip' or 'order' (got {disorder!r})")
    check_load_options(path, max_atoms=max_atoms)
    path = Path(path)
    report = LoadReport(name=name or f"icsd:{path.name}", sources=[str(path)])
    records, rows_props = [], {}
    n_files = 0
    for fname, raw, problem in iter_structure_files(path):
        if not fname.lower().endswith(".cif"):
            continue
        n_files += 1
        if problem:
            report.skipped.append(Skip(fname, 0, problem, "invalid", Path(fname).stem))
            continue
        text = raw.decode("utf-8", errors="replace")
        m = _CODE.search(text)
        mid = f"icsd-{m.group(1)}" if m else Path(fname).stem
        if not text.strip():
            report.skipped.append(Skip(fname, 0, "empty file", "invalid", mid))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = parse_cif_text(text)
        except StructureError as exc:
            report.skipped.append(Skip(fname, 0, str(exc), "invalid", mid))
            continue
        was_disordered = not s.is_ordered
        if was_disordered:
            if disorder == "skip":
                report.skipped.append(Skip(fname, 0, "partial occupancy (disordered sites); use disorder='order' "
                                                     "to order it", "invalid", mid))
                continue
            try:
                s = order_disordered(s)
            except StructureError as exc:
                report.skipped.append(Skip(fname, 0, str(exc), "invalid", mid))
                continue
            report.notes["ordered partial occupancy"] = report.notes.get("ordered partial occupancy", 0) + 1
        rows_props[fname] = {"material_id": mid, "file": fname, "was_disordered": was_disordered}
        records.append((fname, s, "structure", {}, {"max_atoms_canonical": max_atoms}))
    if n_files == 0:
        raise ValueError(f"{path} holds no .cif files (expected an ICSD CIF export)")
    results = process_records(records, workers=workers, progress=progress, desc="parsing ICSD")
    ds = CrystalDataset.from_results(results, rows_props, report, "icsd", name or f"icsd:{path.name}")
    for s in ds.report.skipped:  # name the file
        if s.source == "icsd":
            s.source, s.row = s.row, 0
    if dedupe and len(ds) > 1:
        keep = _dedupe(ds)
        ds = ds.subset(keep)
    ds.report.kept = len(ds)
    return ds


def _dedupe(ds: CrystalDataset) -> np.ndarray:
    from pymatgen.analysis.structure_matcher import StructureMatcher

    matcher = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)
    structures = ds.structures
    keep = np.ones(len(ds), dtype=bool)
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(ds.properties["formula"]):
        groups.setdefault(f, []).append(i)
    for idx in groups.values():
        kept: list[int] = []
        for i in idx:
            dup = next((j for j in kept if matcher.fit(structures[j], structures[i])), None)
            if dup is None:
                kept.append(i)
            else:
                keep[i] = False
                ds.report.skipped.append(Skip(str(ds.properties["file"].iloc[i]), 0,
                                              f"duplicate of {ds.properties['file'].iloc[dup]} (StructureMatcher)",
                                              "duplicate", str(ds.properties["material_id"].iloc[i])))
    return keep
