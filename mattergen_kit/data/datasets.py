"""Crystal datasets: one in-memory container (:class:`CrystalDataset`) and the loaders that fill it.

Every loader returns a :class:`CrystalDataset` whose structures are canonical cells
(:func:`~mattergen_kit.data.crystal_batch.canonicalize_structure`), whose ``.properties`` table has
one row per structure, and whose ``.report`` lists what was kept and, for each skipped record, the
file, the row and the reason.

Bundled set "mp-bundled-20" (design §2) — *not* MP-20:
  MP-20's binary/ternary val+test rows (``mp20_biternary/``) plus MPTS-52 val+test rows
  (``mpts_52/``) with ≤ 20 atoms whose material_id is not already present, filtered like MP-20
  (e_above_hull ≤ 0.08 eV/atom, formation energy ≤ 2 eV/atom) and without MatterGen's excluded
  elements (noble gases, Tc, Pm, Z ≥ 84). Split train/val/test = 80/10/10 by a seeded hash of the
  material_id (:func:`split_of`), recorded in ``datasets/splits/mp-bundled-20.csv``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from mattergen_kit.data.crystal_batch import CrystalBatch
from mattergen_kit.data.parsing import (EXCLUDED_ELEMENTS, EXCLUDED_MIN_Z, StructureError, parse_extxyz_text,
                                        process_records)
from mattergen_kit.data.paths import cache_root, data_root, read_sha256sums, sha256_file, verify_file

__all__ = ["CrystalDataset", "LoadReport", "Skip", "load_bundled", "load_csv", "load_cif_folder",
           "num_atoms_histogram", "load_aflow_bulk_modulus", "load_mp20_phases", "split_of", "BUNDLED_NAME",
           "MAX_ATOMS"]

BUNDLED_NAME = "mp-bundled-20"
MAX_ATOMS = 20
E_ABOVE_HULL_MAX = 0.08  # eV/atom, MP-20's filter
FORMATION_ENERGY_MAX = 2.0  # eV/atom, MP-20's filter
SPLIT_SEED = "mattergen_kit/mp-bundled-20/v1"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
CACHE_VERSION = 1

BUNDLED_FILES = ("mp20_biternary/val.csv.gz", "mp20_biternary/test.csv.gz", "mpts_52/val.csv.gz",
                 "mpts_52/test.csv.gz")

#: source column name -> our name
COLUMN_ALIASES = {"energy_above_hull": "e_above_hull", "spacegroup.number": "spacegroup",
                  "pretty_formula": "source_formula", "e_form": "formation_energy_per_atom"}
#: columns that must be numeric when present (a non-numeric value skips that row)
NUMERIC_COLUMNS = {"band_gap", "formation_energy_per_atom", "e_above_hull", "spacegroup", "bulk_modulus",
                   "energy_per_atom", "magnetic_density", "total_magnetization", "hhi_production", "hhi_reserve"}
DERIVED_COLUMNS = ("formula", "chemical_system", "spacegroup", "hhi_production", "hhi_reserve", "num_atoms")


# ============================================================================================ report
@dataclass
class Skip:
    """One record that was not kept: where it came from and why."""

    source: str
    row: Any
    reason: str
    kind: str = "invalid"  # "invalid" (bad input), "filtered" (policy: size, energy, elements), "duplicate"
    material_id: str | None = None

    def __str__(self) -> str:
        mid = f" ({self.material_id})" if self.material_id else ""
        return f"{self.source} row {self.row}{mid}: {self.reason}"


@dataclass
class LoadReport:
    """What a loader kept and skipped. ``str(report)`` gives a summary; ``to_frame()`` the full list."""

    name: str = ""
    kept: int = 0
    skipped: list[Skip] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # counted events that did not skip (e.g. "ordered")

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([s.__dict__ for s in self.skipped], columns=["source", "row", "reason", "kind",
                                                                          "material_id"])

    def counts(self) -> dict[str, int]:
        """Number of skips per (kind, reason category): the reason's text before ':' / '(' with numbers as '#'."""
        import re

        out: dict[str, int] = {}
        for s in self.skipped:
            cat = re.sub(r"[-+]?\d[\d.]*", "#", s.reason.split(":")[0].split(" (")[0])
            cat = re.sub(r"element\(s\) .*", "element(s)", cat).strip()
            key = f"{s.kind}: {cat}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __str__(self) -> str:
        lines = [f"{self.name or 'dataset'}: kept {self.kept}, skipped {self.n_skipped}"]
        lines += [f"  {n:6d}  {k}" for k, n in self.counts().items()]
        lines += [f"  note: {k} = {n}" for k, n in self.notes.items()]
        lines += [f"  e.g. {s}" for s in self.skipped[:3]]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:  # pragma: no cover - notebook only
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": self.kept, "sources": list(self.sources), "notes": dict(self.notes),
                "skipped": [dict(s.__dict__, row=s.row if isinstance(s.row, (int, str)) else str(s.row))
                            for s in self.skipped]}

    @classmethod
    def from_dict(cls, d: dict) -> "LoadReport":
        return cls(d.get("name", ""), int(d.get("kept", 0)), [Skip(**s) for s in d.get("skipped", [])],
                   list(d.get("sources", [])), dict(d.get("notes", {})))

    def extend(self, other: "LoadReport") -> None:
        self.kept += other.kept
        self.skipped.extend(other.skipped)
        self.sources.extend(other.sources)
        for k, n in other.notes.items():
            self.notes[k] = self.notes.get(k, 0) + n


# ============================================================================================ dataset
class CrystalDataset(torch.utils.data.Dataset):
    """Canonical crystals plus a property table; ``ds[i]`` is a :class:`CrystalBatch` of one crystal.

    Storage is flat float64 numpy (``atom_types`` (ΣN,), ``frac_coords`` (ΣN,3), ``lattice`` (B,3,3),
    ``num_atoms`` (B,)), so ``.structures`` reproduce the canonical cells exactly; batches are float32.
    Use with ``torch.utils.data.DataLoader(ds, batch_size=..., collate_fn=CrystalBatch.collate)``.
    """

    def __init__(self, atom_types, frac_coords, lattice, num_atoms, properties: pd.DataFrame | None = None,
                 report: LoadReport | None = None, name: str = "") -> None:
        self.atom_types = np.asarray(atom_types, dtype=np.int64).reshape(-1)
        self.frac_coords = np.asarray(frac_coords, dtype=np.float64).reshape(-1, 3)
        self.lattice = np.asarray(lattice, dtype=np.float64).reshape(-1, 3, 3)
        self.num_atoms = np.asarray(num_atoms, dtype=np.int64).reshape(-1)
        if self.num_atoms.sum() != len(self.atom_types) or len(self.lattice) != len(self.num_atoms):
            raise ValueError("inconsistent arrays: sum(num_atoms) must equal len(atom_types) and len(lattice) "
                             "must equal len(num_atoms)")
        self.offsets = np.concatenate([[0], np.cumsum(self.num_atoms)]).astype(np.int64)
        props = properties if properties is not None else pd.DataFrame(index=range(len(self.num_atoms)))
        if len(props) != len(self.num_atoms):
            raise ValueError(f"properties has {len(props)} rows for {len(self.num_atoms)} structures")
        self.properties = props.reset_index(drop=True)
        self.report = report if report is not None else LoadReport(name=name, kept=len(self.num_atoms))
        self.name = name
        self._structures = None
        self._prop_cache = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_results(cls, results: Sequence[tuple], rows_props: dict, report: LoadReport, source: str,
                     name: str = "") -> "CrystalDataset":
        """Assemble from :func:`process_records` output; ``rows_props[row]`` are the source's labels."""
        types, coords, lats, counts, props = [], [], [], [], []
        for res in results:
            status, row = res[0], res[1]
            given = rows_props.get(row, {})
            if status != "ok":
                report.skipped.append(Skip(source, row, res[2], "filtered" if status == "filtered" else "invalid",
                                           _mid(given)))
                continue
            _, _, z, f, lat, labels = res
            types.append(z)
            coords.append(f)
            lats.append(lat)
            counts.append(len(z))
            rec = dict(given)
            rec.update({k: v for k, v in labels.items() if not (k == "spacegroup" and _isnum(given.get(k)))})
            rec["source"] = source
            props.append(rec)
        report.kept += len(counts)
        return cls._assemble(types, coords, lats, counts, props, report, name)

    @classmethod
    def _assemble(cls, types, coords, lats, counts, props, report, name) -> "CrystalDataset":
        if counts:
            z, f, lat = np.concatenate(types), np.concatenate(coords), np.stack(lats)
        else:
            z, f, lat = np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3, 3))
        df = _tidy_frame(pd.DataFrame(props))
        return cls(z, f, lat, counts, df, report, name)

    @classmethod
    def from_structures(cls, structures: Sequence, properties: pd.DataFrame | dict | None = None, name: str = "",
                        source: str = "structures", canonicalize: bool = True, workers: int = 1,
                        progress: bool = False, max_atoms: int | None = None) -> "CrystalDataset":
        """Build from pymatgen Structures (canonicalised, checked, labelled like every loader)."""
        props = pd.DataFrame(properties) if properties is not None else pd.DataFrame(index=range(len(structures)))
        given = {i: {k: v for k, v in props.iloc[i].to_dict().items()} for i in range(len(structures))}
        records = [(i, s, "structure", {"spacegroup": given[i].get("spacegroup")},
                    {"canonical": canonicalize, "max_atoms": max_atoms}) for i, s in enumerate(structures)]
        results = process_records(records, workers=workers, progress=progress)
        return cls.from_results(results, given, LoadReport(name=name or source, sources=[source]), source, name)

    @classmethod
    def concat(cls, parts: Sequence["CrystalDataset"], name: str = "") -> "CrystalDataset":
        parts = [p for p in parts]
        report = LoadReport(name=name)
        for p in parts:
            report.extend(p.report)
        if not parts:
            return cls._assemble([], [], [], [], [], report, name)
        return cls(np.concatenate([p.atom_types for p in parts]), np.concatenate([p.frac_coords for p in parts]),
                   np.concatenate([p.lattice for p in parts]), np.concatenate([p.num_atoms for p in parts]),
                   _tidy_frame(pd.concat([p.properties for p in parts], ignore_index=True)), report, name)

    def subset(self, indices: Iterable[int] | np.ndarray, name: str | None = None) -> "CrystalDataset":
        """A new dataset with the given rows (a boolean mask works too); the report is shared."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        atom_idx = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) \
            else np.zeros(0, np.int64)
        sub = CrystalDataset(self.atom_types[atom_idx], self.frac_coords[atom_idx], self.lattice[idx],
                             self.num_atoms[idx], self.properties.iloc[idx].reset_index(drop=True), self.report,
                             self.name if name is None else name)
        if self._structures is not None:
            sub._structures = [self._structures[i] for i in idx]
        return sub

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(len(self.num_atoms))

    def __repr__(self) -> str:
        return (f"CrystalDataset({self.name or 'unnamed'!r}, {len(self)} crystals, "
                f"properties={list(self.properties.columns)})")

    @property
    def structures(self) -> list:
        """pymatgen Structures of the canonical cells (built once, then kept)."""
        if self._structures is None:
            from pymatgen.core import Lattice, Structure

            out = []
            for i in range(len(self)):
                a, b = self.offsets[i], self.offsets[i + 1]
                out.append(Structure(Lattice(self.lattice[i]), self.atom_types[a:b].tolist(), self.frac_coords[a:b]))
            self._structures = out
        return self._structures

    def _batch_properties(self, idx: np.ndarray) -> dict[str, Any]:
        if self._prop_cache is None:
            cache = {}
            for col in self.properties.columns:
                s = self.properties[col]
                if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                    cache[col] = torch.as_tensor(s.to_numpy(dtype=np.float64), dtype=torch.float32)
                else:
                    cache[col] = [None if (isinstance(v, float) and math.isnan(v)) else v for v in s.tolist()]
            self._prop_cache = cache
        out = {}
        for col, v in self._prop_cache.items():
            out[col] = v[torch.as_tensor(idx)] if torch.is_tensor(v) else [v[i] for i in idx]
        return out

    def __getitem__(self, i: int) -> CrystalBatch:
        if isinstance(i, (np.integer,)):
            i = int(i)
        if not isinstance(i, int):
            raise TypeError(f"index with an int (got {type(i).__name__}); use .subset(...) for several rows")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} crystals")
        i %= n
        a, b = self.offsets[i], self.offsets[i + 1]
        return CrystalBatch(torch.from_numpy(self.atom_types[a:b]), torch.from_numpy(self.frac_coords[a:b]),
                            torch.from_numpy(self.lattice[i:i + 1]), torch.from_numpy(self.num_atoms[i:i + 1]),
                            self._batch_properties(np.array([i])))

    def to_batch(self) -> CrystalBatch:
        """All crystals as one CrystalBatch (float32)."""
        if len(self) == 0:
            raise ValueError(f"dataset {self.name!r} is empty (see .report for what was skipped)")
        return CrystalBatch(torch.from_numpy(self.atom_types), torch.from_numpy(self.frac_coords),
                            torch.from_numpy(self.lattice), torch.from_numpy(self.num_atoms),
                            self._batch_properties(np.arange(len(self))))

    def num_atoms_histogram(self, max_atoms: int = MAX_ATOMS) -> np.ndarray:
        """p[N] for N = 0..max_atoms (normalised counts of atoms per canonical cell)."""
        counts = np.bincount(self.num_atoms, minlength=max_atoms + 1)[: max_atoms + 1].astype(np.float64)
        if len(self) and self.num_atoms.max() > max_atoms:
            raise ValueError(f"{int((self.num_atoms > max_atoms).sum())} crystals have more than {max_atoms} atoms")
        return counts / max(counts.sum(), 1.0)

    def average_density(self) -> float:
        """Mean number density ⟨N / V⟩ over crystals (atoms/Å³) — MatterGen's lattice-prior constant."""
        vol = np.abs(np.linalg.det(self.lattice))
        return float(np.mean(self.num_atoms / vol))

    # ------------------------------------------------------------------ (de)serialisation
    def _state(self) -> dict:
        props = {}
        kinds = {}
        for col in self.properties.columns:
            s = self.properties[col]
            if pd.api.types.is_bool_dtype(s):
                props[col], kinds[col] = torch.as_tensor(s.to_numpy(dtype=bool)), "bool"
            elif pd.api.types.is_integer_dtype(s):
                props[col], kinds[col] = torch.as_tensor(s.to_numpy(dtype=np.int64)), "int"
            elif pd.api.types.is_numeric_dtype(s):
                props[col], kinds[col] = torch.as_tensor(s.to_numpy(dtype=np.float64)), "float"
            else:
                props[col], kinds[col] = [None if _isnan(v) else str(v) for v in s.tolist()], "str"
        return {"format": "mattergen_kit.crystal_dataset", "version": CACHE_VERSION, "name": self.name,
                "atom_types": torch.from_numpy(self.atom_types), "frac_coords": torch.from_numpy(self.frac_coords),
                "lattice": torch.from_numpy(self.lattice), "num_atoms": torch.from_numpy(self.num_atoms),
                "properties": props, "columns": list(self.properties.columns), "kinds": kinds,
                "report": json.dumps(self.report.to_dict())}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tensors + property table + report to ``path`` (torch.save; atomic replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        torch.save(self._state(), tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CrystalDataset":
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != "mattergen_kit.crystal_dataset" or state.get("version") != CACHE_VERSION:
            raise ValueError(f"{path} is not a mattergen_kit dataset cache of version {CACHE_VERSION}")
        data = {}
        for col in state["columns"]:
            v = state["properties"][col]
            data[col] = v.numpy() if torch.is_tensor(v) else pd.array(v, dtype=object)
        df = pd.DataFrame(data, columns=state["columns"])
        return cls(state["atom_types"].numpy(), state["frac_coords"].numpy(), state["lattice"].numpy(),
                   state["num_atoms"].numpy(), df, LoadReport.from_dict(json.loads(state["report"])), state["name"])


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _isnum(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not _isnan(v)


def _mid(given: dict) -> str | None:
    v = given.get("material_id")
    return None if _isnan(v) else str(v)


def _tidy_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Column order: material_id, formula, ... derived labels ..., the rest, source."""
    front = [c for c in ("material_id", "formula", "band_gap", "formation_energy_per_atom", "e_above_hull",
                         "spacegroup", "chemical_system", "hhi_production", "hhi_reserve", "num_atoms")
             if c in df.columns]
    back = [c for c in ("source", "split") if c in df.columns]
    rest = [c for c in df.columns if c not in front and c not in back]
    df = df[front + rest + back].copy()
    for col in ("spacegroup", "num_atoms"):
        if col in df.columns and len(df):
            df[col] = pd.to_numeric(df[col]).astype(np.int64)
    for col in df.columns:
        if df[col].dtype == object:
            conv = pd.to_numeric(df[col], errors="coerce")
            if df[col].notna().sum() and conv.notna().sum() == df[col].notna().sum() and \
                    all(isinstance(v, (int, float, np.number)) for v in df[col].dropna()):
                df[col] = conv
    return df


# ============================================================================================ caching
def _options_key(**options) -> str:
    blob = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cached(cache_name: str, build, use_cache: bool = True) -> CrystalDataset:
    path = cache_root() / cache_name
    if use_cache and path.exists():
        try:
            return CrystalDataset.load(path)
        except Exception:  # stale/corrupt cache: rebuild it
            pass
    ds = build()
    if use_cache:
        ds.save(path)
    return ds


# ============================================================================================ CSV
def _read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (.csv or .csv.gz) with clear errors for empty, truncated or non-CSV files."""
    import gzip
    import zlib

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): expected a CDVAE-format CSV with a 'cif' column")
    compression = "gzip" if path.name.endswith(".gz") else None
    try:
        df = pd.read_csv(path, compression=compression)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds no CSV data: expected a header line with a 'cif' column") from None
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise ValueError(f"{path} is not a readable gzip file ({type(exc).__name__}: {exc}); it may be truncated "
                         "or not compressed — re-download it, or drop the .gz suffix if it is plain CSV") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a valid CSV ({type(exc).__name__}: {str(exc)[:200]})") from None
    return df


def _csv_rows(df: pd.DataFrame, path: Path, source: str, report: LoadReport, cif_column: str = "cif",
              filters: dict | None = None):
    """Split a CDVAE-format table into records and per-row labels; bad values are counted skips."""
    if cif_column not in df.columns:
        raise ValueError(f"{path} has no {cif_column!r} column (columns: {list(df.columns)[:12]}); a CDVAE-format "
                         f"CSV needs one CIF string per row in a {cif_column!r} column")
    if len(df) == 0:
        raise ValueError(f"{path} has a header but no data rows")
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed:")])
    df = df.rename(columns={k: v for k, v in COLUMN_ALIASES.items() if k in df.columns and v not in df.columns})
    filters = filters or {}
    numeric = [c for c in df.columns if c in NUMERIC_COLUMNS]
    for col in df.columns:
        if col in numeric or col == cif_column or df[col].dtype != object:
            continue
        conv = pd.to_numeric(df[col], errors="coerce")
        if df[col].notna().sum() > 0 and conv.notna().sum() == df[col].notna().sum():
            df[col] = conv
    bad_numeric: dict[int, str] = {}
    for col in numeric:
        conv = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & conv.isna()
        for i in np.nonzero(bad.to_numpy())[0]:
            bad_numeric.setdefault(int(i), f"wrong type: column {col!r} value {str(df[col].iloc[i])[:40]!r} "
                                           "is not a number")
        df[col] = conv
    records, rows_props = [], {}
    cols = [c for c in df.columns if c != cif_column]
    for i, rec in enumerate(df[cols].to_dict("records")):
        row = i  # 0-based data row (line i + 2 of the file, after the header)
        given = {k: (None if _isnan(v) else v) for k, v in rec.items()}
        rows_props[row] = given
        if i in bad_numeric:
            report.skipped.append(Skip(source, row, bad_numeric[i], "invalid", _mid(given)))
            continue
        reason = _policy_filter(given, filters)
        if reason:
            report.skipped.append(Skip(source, row, reason, "filtered", _mid(given)))
            continue
        records.append((row, df[cif_column].iloc[i], "cif", {"spacegroup": given.get("spacegroup")},
                        {"max_atoms": filters.get("max_atoms"), "exclude_elements": filters.get("exclude_elements",
                                                                                                False)}))
    return records, rows_props


def _policy_filter(given: dict, filters: dict) -> str | None:
    eh = filters.get("e_above_hull_max")
    if eh is not None and _isnum(given.get("e_above_hull")) and given["e_above_hull"] > eh:
        return f"e_above_hull {given['e_above_hull']:.3f} > {eh} eV/atom"
    fe = filters.get("formation_energy_max")
    if fe is not None and _isnum(given.get("formation_energy_per_atom")) and given["formation_energy_per_atom"] > fe:
        return f"formation energy {given['formation_energy_per_atom']:.3f} > {fe} eV/atom"
    return None


def load_csv(path: str | os.PathLike, *, cif_column: str = "cif", max_atoms: int | None = None,
             e_above_hull_max: float | None = None, formation_energy_max: float | None = None,
             exclude_elements: bool = False, cache: bool = True, workers: int = 2, progress: bool = True,
             name: str | None = None) -> CrystalDataset:
    """Load any CDVAE-format CSV (``.csv`` or ``.csv.gz``): a ``cif`` column plus optional property columns.

    Property columns are kept (``energy_above_hull`` → ``e_above_hull``, ``spacegroup.number`` →
    ``spacegroup``, ``pretty_formula`` → ``source_formula``); the derived labels (formula, chemical_system,
    spacegroup where missing, HHI, num_atoms) are added. Rows that fail to parse or check, or hold a
    non-number in a numeric column, are skipped and listed in ``.report`` (file and 0-based data row).
    The result is cached in the cache folder, keyed by the file's sha256 and the options.
    """
    path = Path(path)
    source = path.name
    filters = {"max_atoms": max_atoms, "e_above_hull_max": e_above_hull_max,
               "formation_energy_max": formation_energy_max, "exclude_elements": exclude_elements}

    def build():
        df = _read_table(path)
        report = LoadReport(name=name or source, sources=[str(path)])
        records, rows_props = _csv_rows(df, path, source, report, cif_column, filters)
        results = process_records(records, workers=workers, progress=progress, desc=f"parsing {source}")
        return CrystalDataset.from_results(results, rows_props, report, source, name or source)

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not cache or path.stat().st_size == 0:
        return build()
    key = sha256_file(path)[:16] + "-" + _options_key(v=CACHE_VERSION, cif_column=cif_column, name=name, **filters)
    return _cached(f"csv-{key}.pt", build)


# ============================================================================================ CIF folder / zip
_STRUCT_SUFFIXES = (".cif", ".extxyz", ".xyz")


def _iter_structure_files(path: Path):
    """Yield ``(name, raw bytes, problem)`` for every CIF/extxyz file in a folder (recursive) or a zip archive.

    ``problem`` is None, or why a file could not be read (a symlink that dangles or loops, no permission):
    such files are yielded with ``raw=b""`` so that loaders report them as skips instead of dropping them.
    """
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() not in _STRUCT_SUFFIXES or (p.is_dir() and not p.is_symlink()):
                continue
            name = str(p.relative_to(path))
            try:
                yield name, p.read_bytes(), None
            except OSError as exc:
                target = os.readlink(p) if p.is_symlink() else None
                why = exc.strerror or type(exc).__name__
                yield name, b"", (f"symlink to {target} cannot be read ({why})" if target is not None
                                  else f"cannot be read ({why})")
        return
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (give a folder or a .zip of CIF/extxyz files)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a folder nor a zip archive (or the zip is corrupt); give a folder or "
                         "a .zip of .cif/.extxyz files")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.lower().endswith(_STRUCT_SUFFIXES):
                    continue
                yield info.filename, zf.read(info), None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is a corrupt zip archive ({exc}); re-create or re-download it") from None


def _structure_file_records(path: Path, report: LoadReport, options: dict):
    records, rows_props = [], {}
    n_files = 0
    for fname, raw, problem in _iter_structure_files(path):
        n_files += 1
        if problem:
            report.skipped.append(Skip(fname, 0, problem))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = raw.decode("latin-1")
            except Exception:  # pragma: no cover
                report.skipped.append(Skip(fname, 0, "not a text file"))
                continue
        if "\x00" in text:
            report.skipped.append(Skip(fname, 0, "binary (not a text CIF/extxyz) file"))
            continue
        if not text.strip():
            report.skipped.append(Skip(fname, 0, "empty file"))
            continue
        stem = Path(fname).stem
        if fname.lower().endswith(".cif"):
            row = f"{fname}"
            rows_props[row] = {"material_id": stem, "file": fname}
            records.append((row, text, "cif", {}, options))
        else:
            try:
                frames = parse_extxyz_text(text)
            except StructureError as exc:
                report.skipped.append(Skip(fname, 0, str(exc)))
                continue
            for k, s in enumerate(frames):
                row = f"{fname}#{k}"
                rows_props[row] = {"material_id": f"{stem}-{k}" if len(frames) > 1 else stem, "file": fname}
                records.append((row, s, "structure", {}, options))
    if n_files == 0:
        raise ValueError(f"{path} holds no .cif/.extxyz files")
    return records, rows_props


def load_cif_folder(path: str | os.PathLike, *, max_atoms: int | None = None, workers: int = 2,
                    progress: bool = True, name: str | None = None) -> CrystalDataset:
    """Load every ``.cif`` / ``.extxyz`` file of a folder (recursive) or a ``.zip``.

    ``material_id`` is the file stem (``<stem>-<k>`` for frame k of a multi-frame extxyz), ``file`` the
    path inside the folder/zip. Unparsable/invalid files are skipped and listed in ``.report``.
    """
    path = Path(path)
    report = LoadReport(name=name or path.name, sources=[str(path)])
    records, rows_props = _structure_file_records(path, report, {"max_atoms": max_atoms})
    results = process_records(records, workers=workers, progress=progress, desc=f"parsing {path.name}")
    out_report = report
    ds = CrystalDataset.from_results(results, rows_props, out_report, path.name, name or path.name)
    # per-file skips should name the file: rewrite source of record skips to the file path
    for s in ds.report.skipped:
        if s.source == path.name and isinstance(s.row, str):
            s.source, s.row = f"{path.name}/{s.row.split('#')[0]}", (int(s.row.split("#")[1]) if "#" in s.row else 0)
    return ds


# ============================================================================================ bundled set
def split_of(material_id: str, seed: str = SPLIT_SEED, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    """Deterministic split of a material id: u = sha256(seed + ":" + id) as a number in [0, 1);
    train if u < 0.8, val if u < 0.9, else test."""
    h = hashlib.sha256(f"{seed}:{material_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0 ** 64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def splits_file(root: Path | None = None) -> Path:
    return (Path(root) if root is not None else data_root()) / "splits" / f"{BUNDLED_NAME}.csv"


def _read_or_write_splits(ids: Sequence[str], root: Path) -> dict[str, str]:
    """material_id -> split from datasets/splits/mp-bundled-20.csv; written (from :func:`split_of`) if absent.

    An existing file wins (it is the record); ids it lacks are assigned with :func:`split_of` and an error is
    raised if the file disagrees with the hash for any id (it was edited or made with another seed).
    """
    path = splits_file(root)
    if path.exists():
        table = pd.read_csv(path, dtype=str)
        if list(table.columns[:2]) != ["material_id", "split"]:
            raise ValueError(f"{path} must have columns material_id,split")
        mapping = dict(zip(table.material_id, table.split))
        missing = [i for i in ids if i not in mapping]
        if missing:
            raise ValueError(f"{path} lacks {len(missing)} material ids of the bundled set (e.g. {missing[:3]}); "
                             f"the raw data changed: delete {path} to regenerate it, and commit the new file")
        return mapping
    mapping = {i: split_of(i) for i in ids}
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"material_id": list(ids), "split": [mapping[i] for i in ids]}).to_csv(path, index=False)
    return mapping


def _build_bundled(root: Path, digests: dict[str, str], workers: int, progress: bool) -> CrystalDataset:
    filters = {"max_atoms": MAX_ATOMS, "e_above_hull_max": E_ABOVE_HULL_MAX,
               "formation_energy_max": FORMATION_ENERGY_MAX, "exclude_elements": True}
    report = LoadReport(name=BUNDLED_NAME, sources=list(BUNDLED_FILES))
    all_records, all_props = [], {}
    seen: set[str] = set()
    for rel in BUNDLED_FILES:
        df = _read_table(root / rel)
        mp20 = rel.startswith("mp20_biternary")
        sub_report = LoadReport()
        records, rows_props = _csv_rows(df, root / rel, rel, sub_report, "cif", filters)
        for s in sub_report.skipped:
            report.skipped.append(s)
        kept_records = []
        for rec in records:
            row = rec[0]
            given = rows_props[row]
            mid = str(given.get("material_id"))
            if mid in seen:
                report.skipped.append(Skip(rel, row, "duplicate material_id (already in "
                                           + ("an earlier file" if mp20 else "mp20_biternary") + ")", "duplicate", mid))
                continue
            seen.add(mid)
            kept_records.append(((rel, row),) + rec[1:])
            all_props[(rel, row)] = {"material_id": mid, **{k: given.get(k) for k in
                                     ("band_gap", "formation_energy_per_atom", "e_above_hull", "spacegroup")}}
        # duplicates among rows that were filtered later still count as "seen": keep the first occurrence only
        all_records.extend(kept_records)
    results = process_records(all_records, workers=workers, progress=progress, desc=f"building {BUNDLED_NAME}")
    parts, kept_props = [], []
    types, coords, lats, counts = [], [], [], []
    for res in results:
        key = res[1]
        rel, row = key
        given = all_props[key]
        if res[0] != "ok":
            report.skipped.append(Skip(rel, row, res[2], "filtered" if res[0] == "filtered" else "invalid",
                                       given["material_id"]))
            continue
        _, _, z, f, lat, labels = res
        types.append(z), coords.append(f), lats.append(lat), counts.append(len(z))
        rec = {"material_id": given["material_id"], "formula": labels["formula"],
               "band_gap": given.get("band_gap") if _isnum(given.get("band_gap")) else np.nan,
               "formation_energy_per_atom": given.get("formation_energy_per_atom"),
               "e_above_hull": given.get("e_above_hull"),
               "spacegroup": int(given["spacegroup"]) if _isnum(given.get("spacegroup")) else labels["spacegroup"],
               "chemical_system": labels["chemical_system"], "hhi_production": labels["hhi_production"],
               "hhi_reserve": labels["hhi_reserve"], "num_atoms": labels["num_atoms"], "source": rel}
        kept_props.append(rec)
    report.kept = len(counts)
    ds = CrystalDataset._assemble(types, coords, lats, counts, kept_props, report, BUNDLED_NAME)
    ds.properties["band_gap"] = ds.properties["band_gap"].astype(float)
    mapping = _read_or_write_splits(list(ds.properties["material_id"]), root)
    ds.properties["split"] = [mapping[m] for m in ds.properties["material_id"]]
    return ds


def _bundled_all(workers: int = 2, progress: bool = True, use_cache: bool = True) -> CrystalDataset:
    root = data_root()
    sums = read_sha256sums(root)
    digests = {rel: verify_file(rel, root, sums) for rel in BUNDLED_FILES}
    split_path = splits_file(root)
    split_digest = sha256_file(split_path) if split_path.exists() else "none"
    key = hashlib.sha256(json.dumps([digests, CACHE_VERSION, E_ABOVE_HULL_MAX, FORMATION_ENERGY_MAX, MAX_ATOMS,
                                     SPLIT_SEED], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / f"{BUNDLED_NAME}-{key}.pt"
    if use_cache and path.exists():
        try:
            ds = CrystalDataset.load(path)
            if split_digest == "none" or ds.report.to_dict().get("name") != BUNDLED_NAME:
                raise ValueError("stale")
            cached_split = ds.properties[["material_id", "split"]]
            table = pd.read_csv(split_path, dtype=str)
            if dict(zip(table.material_id, table.split)) == dict(zip(cached_split.material_id, cached_split.split)):
                return ds
        except Exception:
            pass
    ds = _build_bundled(root, digests, workers, progress)
    if use_cache:
        ds.save(path)
    return ds


_MEMO: dict[str, CrystalDataset] = {}


def load_bundled(split: str = "train", *, workers: int = 2, progress: bool = True,
                 use_cache: bool = True) -> CrystalDataset:
    """The bundled "mp-bundled-20" set (see module docstring): split in {"train", "val", "test", "all"}.

    The raw CSVs are verified against ``datasets/SHA256SUMS`` on every call (a corrupt file raises
    :class:`~mattergen_kit.data.paths.DataIntegrityError`). The first call parses and canonicalises
    everything (a few minutes on 2 cores, with a progress bar) and saves a tensor cache in
    ``datasets/cache/`` keyed by the files' sha256; later calls read that cache in about a second.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of 'train', 'val', 'test', 'all' (got {split!r})")
    ds = _bundled_all(workers=workers, progress=progress, use_cache=use_cache)
    if split == "all":
        ds.name = f"{BUNDLED_NAME}/all"
        return ds
    return ds.subset(ds.properties["split"].to_numpy() == split, name=f"{BUNDLED_NAME}/{split}")


def num_atoms_histogram(split: str = "train", max_atoms: int = MAX_ATOMS) -> np.ndarray:
    """p[N], N = 0..20: the fraction of bundled crystals (canonical cells) with N atoms — the sampler's prior."""
    return load_bundled(split, progress=False).num_atoms_histogram(max_atoms)


# ============================================================================================ other bundled tables
def load_aflow_bulk_modulus(split: str = "train", *, workers: int = 2, progress: bool = True) -> CrystalDataset:
    """AFLOW structures with a DFT (AEL–AGL) ``bulk_modulus`` in GPa; split in train/val/test/all (the source's split).

    No material ids in the source: ``material_id`` is ``aflow-<split>-<row>``.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of 'train', 'val', 'test', 'all' (got {split!r})")
    if split == "all":
        parts = [load_aflow_bulk_modulus(s, workers=workers, progress=progress) for s in ("train", "val", "test")]
        return CrystalDataset.concat(parts, name="aflow_bulk_modulus/all")
    root = data_root()
    rel = f"aflow_bulk_modulus/{split}.csv.gz"
    digest = verify_file(rel, root)

    def build():
        df = _read_table(root / rel)
        df = df.rename(columns={df.columns[0]: "source_index"}) if str(df.columns[0]).startswith("Unnamed") else df
        df.insert(0, "material_id", [f"aflow-{split}-{i}" for i in range(len(df))])
        report = LoadReport(name=f"aflow_bulk_modulus/{split}", sources=[rel])
        records, rows_props = _csv_rows(df, root / rel, rel, report, "cif", {})
        results = process_records(records, workers=workers, progress=progress, desc=f"parsing {rel}")
        ds = CrystalDataset.from_results(results, rows_props, report, rel, f"aflow_bulk_modulus/{split}")
        return ds

    return _cached(f"aflow-{split}-{digest[:16]}-v{CACHE_VERSION}.pt", build)


def load_mp20_phases(as_dataframe: bool = True) -> pd.DataFrame:
    """The MP-20 phases table (35k materials, no structures): a DataFrame with material_id, formula,
    species_at_sites, e_above_hull, formation_energy_per_atom, band_gap, the ML-potential energies, and
    the derived chemical_system, num_atoms, hhi_production, hhi_reserve. Verified against SHA256SUMS.
    """
    root = data_root()
    rel = "mp20_phases/mp20_phases.parquet"
    digest = verify_file(rel, root)
    path = cache_root() / f"mp20_phases-{digest[:16]}-v{CACHE_VERSION}.parquet"
    if path.exists():
        try:
            return pd.read_parquet(path)
        except Exception:
            pass
    df = pd.read_parquet(root / rel)
    from pymatgen.core import Composition

    from mattergen_kit.data.parsing import chemical_system, hhi

    species = df["species_at_sites"].map(lambda v: [str(x) for x in v])
    from collections import Counter

    comps = species.map(lambda sp: Composition(dict(Counter(sp))))
    out = df.rename(columns={"pretty_formula": "formula"}).copy()
    if "formula" not in out.columns:
        out.insert(1, "formula", comps.map(lambda c: c.reduced_formula))
    out["chemical_system"] = comps.map(chemical_system)
    out["num_atoms"] = species.map(len).astype(np.int64)
    hh = comps.map(hhi)
    out["hhi_production"] = hh.map(lambda t: t[0])
    out["hhi_reserve"] = hh.map(lambda t: t[1])
    out["species_at_sites"] = species
    out["source"] = rel
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    out.to_parquet(tmp)
    os.replace(tmp, path)
    return out
