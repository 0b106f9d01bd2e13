"""Reading the crystals handed to :func:`~mattergen_kit.evaluation.evaluate`: a folder or file of CIF / extxyz /
POSCAR / pymatgen-JSON structures, a zip of CIF / extxyz files, or a sequence of pymatgen Structures / ASE Atoms.
An unreadable file or member becomes a ``None`` entry with its error, so it shows up in the report."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

from ase.io import read
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifParser

from mattergen_kit.data.files import iter_structure_files
from mattergen_kit.data.safe_json import structure_from_dict
from mattergen_kit.outputs import CIF_ZIP, EXTXYZ, MANIFEST

__all__ = ["load_structures", "read_inputs", "as_structure", "STRUCTURE_SUFFIXES"]

STRUCTURE_SUFFIXES = (".cif", ".extxyz", ".xyz", ".vasp", ".poscar", ".json")


def load_structures(path: str | os.PathLike) -> tuple[list, list[str], list[str]]:
    """Read every structure in a folder (``*.cif`` — all blocks —, ``*.extxyz``/``*.xyz`` — all frames —,
    ``POSCAR``/``*.vasp``, pymatgen ``*.json``) or a single file. Returns ``(structures, names, errors)``;
    a file that cannot be parsed gives one ``None`` entry with its error, so it shows up in the report."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    files = [path] if path.is_file() else _structure_files(path)
    structures, names, errors = [], [], []
    for f in files:
        rel = str(f.relative_to(path)) if path.is_dir() else f.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = _read_file(f)
            if not found:
                raise ValueError("no structure in file")
            for k, (s, name) in enumerate(found):
                bad = isinstance(s, Exception)  # one unreadable member of a zip
                structures.append(None if bad else s)
                names.append(name or (rel if len(found) == 1 else f"{rel}#{k}"))
                errors.append(f"parse error: {type(s).__name__}: {s}"[:300] if bad else "")
        except Exception as exc:  # noqa: BLE001
            structures.append(None)
            names.append(rel)
            errors.append(f"parse error: {type(exc).__name__}: {exc}"[:300])
    if not files:
        raise FileNotFoundError(f"no structure files ({', '.join(STRUCTURE_SUFFIXES)}, POSCAR) under {path}")
    return structures, names, errors


def _structure_files(folder: Path) -> list[Path]:
    """The structure files of a folder (hidden files and folders left out).

    A ``mattergen-kit generate`` folder holds every crystal three times (CIFs, ``generated_crystals.extxyz``,
    ``generated_crystals_cif.zip``): the collections are read only when no single-structure file is there
    (a MatterGen output folder), and then the extxyz alone.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and (p.suffix.lower() in STRUCTURE_SUFFIXES or p.name == CIF_ZIP
                        or p.name.upper().startswith(("POSCAR", "CONTCAR"))))
    collections = [p for p in files if p.name in (EXTXYZ, CIF_ZIP)]
    singles = [p for p in files if p.name not in (EXTXYZ, CIF_ZIP)]
    if singles:
        return singles
    return [p for p in collections if p.name == EXTXYZ] or collections


def _read_file(f: Path) -> list[tuple[Any, str | None]]:
    """``[(structure, name or None), ...]`` of one file (a zip: every CIF/extxyz inside, named by its path)."""
    suf = f.suffix.lower()
    if suf == ".zip":
        return _read_zip(f)
    if suf == ".cif":
        return [(s, None) for s in CifParser(str(f)).parse_structures(primitive=False)]
    if suf in (".extxyz", ".xyz"):
        return [(AseAtomsAdaptor.get_structure(a), str(a.info["file"]) if "file" in a.info else None)
                for a in read(str(f), index=":")]
    if suf == ".json":
        return [(structure_from_dict(json.loads(f.read_text()), str(f)), None)]  # no monty class dispatch
    return [(Structure.from_file(str(f)), None)]


def _read_zip(f: Path) -> list:
    found = []
    for name, raw, _ in iter_structure_files(f):
        text = raw.decode("utf-8", errors="replace")
        try:
            if name.lower().endswith(".cif"):
                found += [(s, name) for s in CifParser.from_str(text).parse_structures(primitive=False)]
            else:
                found += [(AseAtomsAdaptor.get_structure(a), f"{name}#{k}")
                          for k, a in enumerate(read(io.StringIO(text), index=":", format="extxyz"))]
        except Exception as exc:  # noqa: BLE001 - reported for this member, the others are still read
            found.append((exc, name))
    return found


def as_structure(x):
    if x is None:
        return None
    if hasattr(x, "lattice") and hasattr(x, "frac_coords"):
        return x
    if hasattr(x, "get_cell"):  # ASE Atoms
        return AseAtomsAdaptor.get_structure(x)
    raise TypeError(f"expected a pymatgen Structure or ASE Atoms, got {type(x).__name__}")


def read_inputs(structures, names) -> tuple[list, list[str], list[str]]:
    """``(structures or None, names, load errors)`` from a path or a sequence of Structures / ASE Atoms."""
    if isinstance(structures, (str, os.PathLike)):
        inputs, file_names, load_errors = load_structures(structures)
        names = names or file_names
    else:
        if _is_structure(structures):  # one Structure / Atoms: evaluated as a list of one
            structures = [structures]
        if isinstance(structures, (dict, bytes)) or not isinstance(structures, Iterable):
            raise TypeError(f"structures must be a list of pymatgen Structures / ASE Atoms, or the path of a folder, "
                            f"file or zip of structure files; got {type(structures).__name__}")
        structures = list(structures)
        wrong = [(i, type(x).__name__) for i, x in enumerate(structures) if x is not None and not _is_structure(x)]
        if wrong:  # a caller's mistake (a list of file names, formulas ...), not a crystal that failed a check
            i, kind = wrong[0]
            raise TypeError(f"structures[{i}] is a {kind}, not a pymatgen Structure or ASE Atoms ({len(wrong)} such); "
                            "to evaluate files, give their folder or zip as the path")
        inputs, load_errors = [], []
        for x in structures:
            try:
                inputs.append(as_structure(x))
                load_errors.append("" if x is not None else "no structure")
            except Exception as exc:  # noqa: BLE001
                inputs.append(None)
                load_errors.append(f"{type(exc).__name__}: {exc}")
    if not inputs:
        raise ValueError("no structures to evaluate (an empty list)")
    if names is not None:
        if isinstance(names, str) or len(names) != len(inputs):
            raise ValueError(f"names must be a list of one name per structure ({len(inputs)}), got {names!r:.80}")
        names = [str(n) for n in names]
    names = list(names) if names is not None else [str(i) for i in range(len(inputs))]
    return inputs, names, load_errors


def _is_structure(x) -> bool:
    """A pymatgen Structure or ASE Atoms (what :func:`as_structure` reads)."""
    return (hasattr(x, "lattice") and hasattr(x, "frac_coords")) or hasattr(x, "get_cell")
