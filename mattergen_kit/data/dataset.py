"""The in-memory container every loader returns (:class:`CrystalDataset`) and its tensor cache.

Structures are canonical cells (:func:`~mattergen_kit.data.crystal_batch.canonicalize_structure`),
``.properties`` has one row per structure and ``.report`` lists what was kept and skipped. A built dataset
is cached in the cache folder (``torch.save`` of tensors and a JSON report; read with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from mattergen_kit.constants import MAX_ATOMS  # noqa: F401  (re-exported)
from mattergen_kit.data.crystal_batch import CrystalBatch
from mattergen_kit.data.parsing import process_records
from mattergen_kit.data.paths import cache_root
from mattergen_kit.data.report import LoadReport, Skip

CACHE_VERSION = 1
#: source column name -> our name
COLUMN_ALIASES = {"energy_above_hull": "e_above_hull", "spacegroup.number": "spacegroup",
                  "pretty_formula": "source_formula", "e_form": "formation_energy_per_atom"}
#: columns that must be numeric when present (a non-numeric value skips that row)
NUMERIC_COLUMNS = {"band_gap", "formation_energy_per_atom", "e_above_hull", "spacegroup", "bulk_modulus",
                   "energy_per_atom", "magnetic_density", "total_magnetization", "hhi_production", "hhi_reserve"}
DERIVED_COLUMNS = ("formula", "chemical_system", "spacegroup", "hhi_production", "hhi_reserve", "num_atoms")


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
    def from_results(cls, results: Sequence, rows_props: dict, report: LoadReport, source: str,
                     name: str = "") -> "CrystalDataset":
        """Assemble from :func:`process_records` output (``ParsedCrystal`` / ``RecordSkip``); ``rows_props[row]``
        are the source's labels."""
        types, coords, lats, counts, props = [], [], [], [], []
        for res in results:
            given = rows_props.get(res.row, {})
            if not res.ok:
                report.skipped.append(Skip(source, res.row, res.reason, res.kind, _mid(given)))
                continue
            types.append(res.atom_types)
            coords.append(res.frac_coords)
            lats.append(res.lattice)
            counts.append(len(res.atom_types))
            rec = dict(given)
            rec.update({k: v for k, v in res.labels.items() if not (k == "spacegroup" and _isnum(given.get(k)))})
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

    def to_npz(self, path: str | os.PathLike) -> None:
        """Write everything :meth:`load` restores as one compressed ``.npz`` that needs no pickle to read: arrays,
        numeric columns as arrays, text columns as unicode arrays with a None mask, the report as UTF-8 JSON bytes.
        (The shipped precomputed bundled set, :mod:`mattergen_kit.data.precomputed`.)"""
        arrays: dict[str, np.ndarray] = {
            "atom_types": self.atom_types, "frac_coords": self.frac_coords, "lattice": self.lattice,
            "num_atoms": self.num_atoms, "name": np.array(self.name),
            "report": np.frombuffer(json.dumps(self.report.to_dict()).encode(), np.uint8),
            "columns": np.array(list(self.properties.columns))}
        state = self._state()
        for k, col in enumerate(state["columns"]):
            v, kind = state["properties"][col], state["kinds"][col]
            arrays[f"kind_{k}"] = np.array(kind)
            if kind == "str":
                arrays[f"col_{k}"] = np.array(["" if x is None else x for x in v], dtype=str)
                arrays[f"none_{k}"] = np.array([x is None for x in v], bool)
            else:
                arrays[f"col_{k}"] = v.numpy()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "CrystalDataset":
        """Read a :meth:`to_npz` file (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            columns = [str(c) for c in z["columns"]]
            data = {}
            for k, col in enumerate(columns):
                v, kind = z[f"col_{k}"], str(z[f"kind_{k}"])
                if kind == "str":
                    none = z[f"none_{k}"]
                    data[col] = pd.array([None if n else str(x) for x, n in zip(v.tolist(), none)], dtype=object)
                else:
                    data[col] = v
            df = pd.DataFrame(data, columns=columns)
            report = LoadReport.from_dict(json.loads(z["report"].tobytes().decode()))
            return cls(z["atom_types"], z["frac_coords"], z["lattice"], z["num_atoms"], df, report, str(z["name"]))


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
