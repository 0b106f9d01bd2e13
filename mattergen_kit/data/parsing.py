"""Parsing and checking one crystal, and the labels every loader attaches to it.

Everything here works on a single record so that it can run in a worker process
(:func:`process_records` uses a ``multiprocessing`` pool of 2 and a tqdm bar).

A record is ``(row, text, fmt, given, options)``: ``row`` identifies it in its file (CSV row number, file name,
frame index), ``text`` is a CIF / extxyz string (or a pymatgen ``Structure`` / its dict), ``given`` is a
dict of labels the source already has (e.g. its ``spacegroup``). The result is either a :class:`ParsedCrystal`
(canonical cell, float64) or a :class:`RecordSkip` (``kind`` "invalid" or "filtered", and the reason).

Checks (each failure is a *counted skip* with a reason, never a crash):

* the text parses (CIF through pymatgen's ``CifParser``; extxyz through ASE) and holds ≥ 1 atom;
  every element is a real element with 1 ≤ Z ≤ 100 (pymatgen would otherwise drop unknown sites
  with only a warning: we turn that into a skip);
* CIF cell lengths > 0, angles in (0°, 180°), occupancies in (0, 1] as written;
* lattice finite and non-degenerate: volume ≥ 0.1 Å³ and ≥ 0.1 Å³ per atom ... (``min_volume``), no lattice
  vector longer than 500 Å (``MAX_CELL_LENGTH``);
* fractional coordinates finite; all sites fully occupied (partial occupancy is skipped here; the
  ICSD loader can order such structures);
* no overlapping atoms: the smallest periodic distance ≥ ``min_distance`` (0.5 Å, the structural
  validity threshold of design §6) measured on the Niggli cell, where the minimum image is exact enough;
* canonicalisation (:func:`canonicalize_structure`: primitive → Niggli → symmetric polar factor) succeeds.

Labels (``structure_labels``): ``formula`` (reduced), ``chemical_system`` (sorted symbols joined by
"-"), ``spacegroup`` (international number from spglib with symprec 0.1 unless the source gives one),
``hhi_production`` / ``hhi_reserve`` (pymatgen's ``HHIModel.get_hhi``: the element HHI values of
pymatgen's table weighted by each element's *weight fraction* in the composition; NaN where an
element has no HHI value), ``num_atoms`` (atoms in the canonical cell).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Elements MatterGen leaves out of its training data (noble gases, Tc, Pm, and Z ≥ 84): re-exported from constants.
from mattergen_kit.constants import EXCLUDED_ELEMENTS, EXCLUDED_MIN_Z, NOBLE_GASES  # noqa: F401
from mattergen_kit.data.crystal_batch import MAX_ATOMIC_NUM, canonicalize_structure
from mattergen_kit.data.safe_json import structure_from_dict

DEFAULT_MIN_DISTANCE = 0.5  # Å
DEFAULT_MIN_VOLUME = 0.1  # Å^3 per atom
#: longest accepted lattice vector (Å): real cells of ≤ a few hundred atoms are far shorter, and pymatgen's Niggli
#: reduction of a needle-like 10^4 Å cell runs for minutes (a hang for the whole load)
MAX_CELL_LENGTH = 500.0
SYMPREC = 0.1

_HHI = None


def _hhi_model():
    global _HHI
    if _HHI is None:
        from pymatgen.analysis.hhi import HHIModel

        _HHI = HHIModel()
    return _HHI


def hhi(composition) -> tuple[float, float]:
    """(HHI_production, HHI_reserve) of a composition, weight-fraction weighted (pymatgen's data); NaN if unknown."""
    p, r = _hhi_model().get_hhi(composition)
    return (float("nan") if p is None else float(p), float("nan") if r is None else float(r))


def spacegroup_number(structure, symprec: float = SYMPREC) -> int:
    """International space-group number from spglib (symprec 0.1 Å by default); 0 if spglib fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # spglib can fail on pathological cells; 0 marks "unknown"
        return 0


def chemical_system(composition) -> str:
    return "-".join(sorted(el.symbol for el in composition.elements))


def structure_labels(structure, spacegroup: int | None = None) -> dict[str, Any]:
    """The labels every loader attaches: formula, chemical_system, spacegroup, hhi_production, hhi_reserve, num_atoms."""
    comp = structure.composition
    hp, hr = hhi(comp)
    sg = spacegroup
    if sg is None or (isinstance(sg, float) and math.isnan(sg)) or int(sg) <= 0:
        sg = spacegroup_number(structure)
    return {"formula": comp.reduced_formula, "chemical_system": chemical_system(comp), "spacegroup": int(sg),
            "hhi_production": hp, "hhi_reserve": hr, "num_atoms": len(structure)}


def excluded_elements_in(structure) -> list[str]:
    """Symbols of MatterGen-excluded elements (noble gases, Tc, Pm, Z ≥ 84) present in the structure."""
    return sorted({el.symbol for el in structure.composition.elements
                   if el.symbol in EXCLUDED_ELEMENTS or el.Z >= EXCLUDED_MIN_Z})


# ---------------------------------------------------------------------------------------------- parsing
class StructureError(ValueError):
    """One structure cannot be used; the message says why."""


def parse_cif_text(text: str):
    """Parse a CIF string into one pymatgen Structure (symmetry operations applied), strictly.

    Raises :class:`StructureError` for empty/malformed text, unknown elements (pymatgen would silently
    drop those sites), or a CIF without a structure block.
    """
    from pymatgen.io.cif import CifParser

    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        raise StructureError("empty CIF text")
    text = str(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text)
            _check_cell_parameters(parser)
            structures = parser.parse_structures(primitive=False, on_error="raise")
        except StructureError:
            raise
        except Exception as exc:  # pymatgen raises ValueError/KeyError/IndexError/... on bad CIFs
            occupancy = re.search(r"Occupancy ([0-9.]+) exceeded tolerance", str(exc))
            if occupancy:
                raise StructureError(f"duplicate sites: atoms at one position have a total occupancy of "
                                     f"{occupancy.group(1)} (> 1); remove the repeated atom line(s)") from None
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            extra = "; ".join(str(w.message).splitlines()[0] for w in caught if "not parse" in str(w.message).lower()
                              or "invalid" in str(w.message).lower())[:200]
            raise StructureError(f"malformed CIF ({type(exc).__name__}: {msg[:200]}){'; ' + extra if extra else ''}")
    bad = [str(w.message).splitlines()[0] for w in caught
           if any(k in str(w.message).lower() for k in ("skipping", "could not parse", "not a valid", "invalid"))]
    if bad:
        raise StructureError(f"CIF problem: {bad[0][:200]}")
    if not structures:
        raise StructureError("CIF holds no structure")
    if len(structures) > 1:
        raise StructureError(f"CIF holds {len(structures)} structures; give one per file/row")
    return structures[0]


def _check_cell_parameters(parser) -> None:
    """Cell lengths must be > 0 and angles in (0°, 180°) as written: pymatgen accepts a negative length
    (it flips the lattice vector), which would hide a broken file behind a valid-looking structure."""
    from pymatgen.io.cif import str2float

    def value(block, key):
        try:
            return float(str2float(block.data[key]))
        except (ValueError, TypeError):
            raise StructureError(f"malformed CIF: {key} is {block.data[key]!r}, not a number") from None

    for block in parser._cif.data.values():  # the parsed CIF blocks (pymatgen keeps no public handle)
        for key in ("_cell_length_a", "_cell_length_b", "_cell_length_c"):
            if key in block.data and value(block, key) <= 0:
                raise StructureError(f"malformed CIF: {key} is {block.data[key]} (a cell length must be > 0)")
        for key in ("_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"):
            if key in block.data and not 0 < value(block, key) < 180:
                raise StructureError(f"malformed CIF: {key} is {block.data[key]} (an angle must be in (0, 180))")
        for occupancy in block.data.get("_atom_site_occupancy", []):
            try:
                ok = occupancy in ("?", ".") or 0 < float(str2float(occupancy)) <= 1.0 + 1e-6
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise StructureError(f"malformed CIF: occupancy {occupancy!r} (must be a number in (0, 1])")


def parse_extxyz_text(text: str) -> list:
    """All frames of an extxyz string as pymatgen Structures (must be periodic)."""
    import io

    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    if not text or not text.strip():
        raise StructureError("empty extxyz text")
    try:
        frames = read(io.StringIO(text), index=":", format="extxyz")
    except Exception as exc:
        if isinstance(exc, KeyError):  # ASE looks the symbol up in its element table
            raise StructureError(f"malformed extxyz: unknown element {exc}") from None
        raise StructureError(f"malformed extxyz ({type(exc).__name__}: {str(exc)[:200]})") from None
    out = []
    for atoms in frames:
        if not all(atoms.pbc):
            raise StructureError(f"extxyz frame is not periodic (pbc={list(atoms.pbc)}); a Lattice= entry is needed")
        out.append(AseAtomsAdaptor.get_structure(atoms))
    return out


def to_structure(obj, fmt: str = "cif"):
    """A pymatgen Structure from a CIF string, a Structure, or a Structure dict."""
    from pymatgen.core import Structure

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, dict):
        try:
            return structure_from_dict(obj, "structure dict")  # no monty class dispatch (data/safe_json.py)
        except Exception as exc:
            raise StructureError(f"invalid structure dict ({type(exc).__name__}: {str(exc)[:200]})") from None
    if fmt == "cif":
        return parse_cif_text(obj)
    if fmt == "extxyz":
        frames = parse_extxyz_text(obj)
        if len(frames) != 1:
            raise StructureError(f"expected one extxyz frame, got {len(frames)}")
        return frames[0]
    raise StructureError(f"unknown format {fmt!r}")


def check_raw_structure(s, min_volume: float = DEFAULT_MIN_VOLUME) -> None:
    """Checks before canonicalisation (cheap; raise StructureError)."""
    if len(s) == 0:
        raise StructureError("structure has no atoms")
    m = np.asarray(s.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(m)):
        raise StructureError("lattice has NaN/inf entries")
    longest = float(np.linalg.norm(m, axis=1).max())
    if longest > MAX_CELL_LENGTH:
        raise StructureError(f"implausible cell: a lattice vector is {longest:.4g} Å long (> {MAX_CELL_LENGTH:g} Å)")
    vol = abs(float(np.linalg.det(m)))
    if not math.isfinite(vol) or vol < min_volume * len(s):
        raise StructureError(f"degenerate lattice: volume {vol:.3g} Å^3 for {len(s)} atoms "
                             f"(< {min_volume} Å^3 per atom)")
    if not np.all(np.isfinite(s.frac_coords)):
        raise StructureError("fractional coordinates have NaN/inf entries")
    if not s.is_ordered:
        raise StructureError("partial occupancy (disordered sites); order it first or use load_icsd(disorder='order')")
    for sp in s.composition.elements:
        z = getattr(sp, "Z", 0)
        if not (1 <= z <= MAX_ATOMIC_NUM) or type(sp).__name__ == "DummySpecies":
            raise StructureError(f"unsupported element {sp} (need a real element with 1 <= Z <= {MAX_ATOMIC_NUM})")


def min_periodic_distance(s) -> float:
    """Smallest distance between two atoms or an atom and its own image (Å)."""
    f = np.asarray(s.frac_coords)
    d = s.lattice.get_all_distances(f, f)
    np.fill_diagonal(d, np.inf)
    self_img = float(min(np.linalg.norm(v) for v in _short_vectors(s.lattice.matrix)))
    return float(min(d.min() if d.size else np.inf, self_img))


def _short_vectors(m):
    m = np.asarray(m, dtype=float)
    out = []
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            for k in (-1, 0, 1):
                if (i, j, k) != (0, 0, 0):
                    out.append(i * m[0] + j * m[1] + k * m[2])
    return out


def prepare_structure(s, *, canonical: bool = True, min_distance: float = DEFAULT_MIN_DISTANCE,
                      min_volume: float = DEFAULT_MIN_VOLUME):
    """Check a parsed structure and return its canonical cell (raise StructureError with the reason)."""
    check_raw_structure(s, min_volume=min_volume)
    try:
        c = canonicalize_structure(s) if canonical else s.copy()
    except Exception as exc:
        raise StructureError(f"canonicalisation failed ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not np.all(np.isfinite(c.lattice.matrix)):
        raise StructureError("canonical lattice is not finite")
    d = min_periodic_distance(c)
    if d < min_distance:
        raise StructureError(f"overlapping atoms: smallest periodic distance {d:.3f} Å < {min_distance} Å")
    return c


# ---------------------------------------------------------------------------------------------- records
@dataclass
class ParsedCrystal:
    """One record that passed every check: its canonical cell and labels."""

    row: Any
    atom_types: np.ndarray  # (N,) int64 atomic numbers
    frac_coords: np.ndarray  # (N, 3) float64 in [0, 1)
    lattice: np.ndarray  # (3, 3) float64, rows are lattice vectors (Å)
    labels: dict

    ok = True


@dataclass
class RecordSkip:
    """One record left out: ``kind`` is "invalid" (bad input) or "filtered" (a policy such as max_atoms)."""

    row: Any
    reason: str
    kind: str = "invalid"

    ok = False


def process_record(record) -> ParsedCrystal | RecordSkip:
    """Worker: ``(row, obj, fmt, given, options)`` -> :class:`ParsedCrystal` or :class:`RecordSkip`."""
    row, obj, fmt, given, options = record
    max_atoms = options.get("max_atoms")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = to_structure(obj, fmt)
            if max_atoms is not None and len(s) > max_atoms:
                return RecordSkip(row, f"too many atoms: {len(s)} > max_atoms={max_atoms}", "filtered")
            if options.get("exclude_elements"):
                bad = excluded_elements_in(s)
                if bad:
                    return RecordSkip(row, f"excluded element(s) {', '.join(bad)} (noble gas / Tc / Pm / Z>=84)",
                                      "filtered")
            c = prepare_structure(s, canonical=options.get("canonical", True),
                                  min_distance=options.get("min_distance", DEFAULT_MIN_DISTANCE))
            max_after = options.get("max_atoms_canonical")
            if max_after is not None and len(c) > max_after:
                return RecordSkip(row, f"too many atoms: {len(c)} in the primitive cell > max_atoms={max_after}",
                                  "filtered")
            labels = structure_labels(c, spacegroup=(given or {}).get("spacegroup"))
    except StructureError as exc:
        return RecordSkip(row, str(exc))
    except Exception as exc:  # never let one record crash the load
        return RecordSkip(row, f"unexpected {type(exc).__name__}: {str(exc)[:200]}")
    z = np.array([site.specie.Z for site in c], dtype=np.int64)
    frac = np.mod(np.asarray(c.frac_coords, dtype=np.float64), 1.0)
    frac[frac >= 1.0] = 0.0
    return ParsedCrystal(row, z, frac, np.asarray(c.lattice.matrix, dtype=np.float64), labels)


def process_records(records: Sequence, workers: int = 2, progress: bool = True, desc: str = "parsing crystals",
                    chunksize: int = 16) -> list[ParsedCrystal | RecordSkip]:
    """Run :func:`process_record` over ``records`` (a Pool of ``workers`` processes when there are many)."""
    from tqdm.auto import tqdm

    records = list(records)
    if workers <= 1 or len(records) < 64:
        return [process_record(r) for r in tqdm(records, desc=desc, disable=not progress, mininterval=1.0)]
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return list(tqdm(pool.imap(process_record, records, chunksize=chunksize), total=len(records), desc=desc,
                         disable=not progress, mininterval=1.0))
