"""Reference data for evaluation: reference structures (novelty, distribution metrics), the known Materials Project
compositions (composition novelty) and the named convex hulls.

``reference`` arguments accept:

* ``"bundled-train"`` (default), ``"bundled-val"``, ``"bundled-test"``, ``"bundled-all"``: the bundled
  mp-bundled-20 splits (:func:`mattergen_kit.datasets.load_bundled`);
* a ``CrystalDataset`` (anything with ``.structures``), or a list of pymatgen ``Structure``;
* ``None``: no reference (novelty and distribution metrics are not computed).

Hulls (:func:`hull_table`; a hull needs only composition + DFT formation energy per phase)
-------------------------------------------------------------------------------------------
* ``"mp20+mpfe"`` (default, :data:`DEFAULT_HULL`): the MP-20 phases (35,317, ≤ 20 atoms per cell), the bundled
  structures not among them (2,966) and the 15,104 Materials Project formation energies
  (``mp_formation_energies/``, 33,758 ids) whose id is in neither — the large-cell phases (PrF3, B2S3, ...) that
  MP-20 lacks. **Merge rule: one entry per material id, the MP-20 value preferred** where both snapshots have it.
  Measured on 1,500 MP-20 ground states (MP e_above_hull = 0) that both snapshots hold
  (``benchmarks/results/hull_merge_policy.json``, ``benchmarks/bench_hull_merge.py``): with MP-20 values preferred
  none sits below the merged hull and 0.8 % sit > 0.05 eV/atom above it (pushed up by phases only the MP
  formation energies hold); preferring the MP formation energies puts 5.0 % of those ground states (at their
  MP-20 energies) > 0.05 below and 16.5 % > 0.05 above; keeping both values of each id puts 16.7 % > 0.05 above.
  The ML formation energies are on the MP-20 footing (the elemental references are fitted to bundled MP-20
  formation energies, :mod:`.hull`), so the MP-20 value is the consistent one.
* ``"mp20"``: the hull used until 2026-12 — MP-20 phases + bundled structures only. Every chemical system whose
  competing phases have > 20 atoms per cell looks emptier than it is (the demo's PrCdClF3 sat 1.1 eV/atom
  *below* it; it is +0.3 above ``"mp20+mpfe"``). Kept to compare old figures with new ones.

The merged table is built from the verified sources at first use (~7 s) into the cache
(``<cache>/evaluation/hull-mp20+mpfe-<key>.parquet``, no pickle) and rebuilt when that file is absent or unreadable; a
``datasets/precomputed`` copy with a matching checksum would be used first (none ships: issue 23's budget).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from mattergen_kit import datasets as _datasets
from mattergen_kit.data.bundled import precomputed_bundled_name
from mattergen_kit.data.paths import cache_root, data_root, verify_file
from mattergen_kit.data.precomputed import find_precomputed
from mattergen_kit.evaluation.cache import building

__all__ = ["resolve_reference", "load_phases_table", "bundled", "hull_reference_table", "cache_dir", "HullTable",
           "hull_table", "DEFAULT_HULL", "HULL_NAMES", "load_mp_formation_energies", "known_compositions",
           "merged_hull_file_name"]

BUNDLED_PREFIX = "bundled-"
#: the bundled splits a reference can name
BUNDLED_REFERENCES = ("bundled-train", "bundled-val", "bundled-test", "bundled-all")
PHASES_FILE = "mp20_phases/mp20_phases.parquet"
MP_FE_FILE = "mp_formation_energies/mp_formation_energies.json.gz"
DEFAULT_HULL = "mp20+mpfe"
HULL_NAMES = ("mp20+mpfe", "mp20")
MERGE_RULE = "one entry per material id; MP-20 value preferred"
HULL_COLUMNS = ("material_id", "composition", "formation_energy_per_atom", "source")  # all a hull needs


def cache_dir():
    d = cache_root() / "evaluation"
    d.mkdir(parents=True, exist_ok=True)
    return d


_BUNDLED: dict[str, Any] = {}


def bundled(split: str):
    """The bundled split as a CrystalDataset (memoised in this process)."""
    if split not in _BUNDLED:
        _BUNDLED[split] = _datasets.load_bundled(split, progress=False)
    return _BUNDLED[split]


def resolve_reference(reference) -> tuple[list | None, list[str] | None, str]:
    """``(structures, ids, name)`` for a reference spec (see module docstring)."""
    if reference is None:
        return None, None, "none"
    if isinstance(reference, str):
        if reference not in BUNDLED_REFERENCES:
            raise ValueError(f"unknown reference {reference!r}: use {', '.join(map(repr, BUNDLED_REFERENCES))}, a "
                             "CrystalDataset, a list of pymatgen Structures, or None")
        split = reference[len(BUNDLED_PREFIX):]
        ds = bundled(split)
        ids = list(ds.properties["material_id"].astype(str)) if "material_id" in ds.properties else None
        return ds.structures, ids, reference
    if hasattr(reference, "structures"):
        props = getattr(reference, "properties", None)
        ids = list(props["material_id"].astype(str)) if props is not None and "material_id" in props else None
        return list(reference.structures), ids, getattr(reference, "name", "dataset") or "dataset"
    refs = list(reference)
    return refs, None, f"{len(refs)} structures"


def _read_table(path) -> pd.DataFrame:
    out = pd.read_parquet(path)
    out["composition"] = [json.loads(c) for c in out["composition"]]
    return out


def _write_table(table: pd.DataFrame, path, **parquet_options) -> None:
    stored = table.assign(composition=[json.dumps(c, sort_keys=True) for c in table["composition"]])
    tmp = path.with_name(f".{path.name}.tmp")
    stored.to_parquet(tmp, index=False, **parquet_options)
    tmp.replace(path)


@lru_cache(maxsize=1)
def load_phases_table() -> pd.DataFrame:
    """MP-20 phases (35k) with ``reduced_formula``, ``composition`` (dict el -> count), ``n_atoms``,
    ``formation_energy_per_atom`` (DFT, eV/atom), ``e_above_hull`` (MP), ``band_gap``."""
    digest = verify_file(PHASES_FILE)
    path = cache_dir() / f"phases-{digest[:16]}.parquet"  # a table (no pickle): see evaluation/cache.py
    if not path.exists():  # shipped precomputed (mattergen_kit.data.precomputed), checksum verified
        path = find_precomputed(path.name) or path
    if path.exists():
        try:
            return _read_table(path)
        except Exception as exc:  # noqa: BLE001 - a broken cache file is rebuilt from the verified source
            warnings.warn(f"rebuilding the unreadable phases cache {path}: {exc}")
            path = cache_dir() / f"phases-{digest[:16]}.parquet"
    df = pd.read_parquet(data_root() / PHASES_FILE)
    with building(f"the MP-20 phases table ({len(df)} phases)", path):
        out = _phases_table(df)
        _write_table(out, path)
    return out


def _phases_table(df: pd.DataFrame) -> pd.DataFrame:
    comps = [dict(Counter(str(x) for x in sp)) for sp in df["species_at_sites"]]
    return pd.DataFrame({
        "material_id": df["material_id"].astype(str),
        "reduced_formula": [Composition(c).reduced_formula for c in comps],
        "composition": comps,
        "n_atoms": [int(sum(c.values())) for c in comps],
        "formation_energy_per_atom": df["formation_energy_per_atom"].astype(float),
        "e_above_hull": df["e_above_hull"].astype(float),
        "band_gap": df["band_gap"].astype(float),
        "source": "mp20_phases",
    })


def load_mp_formation_energies() -> pd.DataFrame:
    """The 33,758 Materials Project formation energies (``datasets/mp_formation_energies/``, checksum verified) as a
    table: ``material_id``, ``reduced_formula``, ``composition`` (the formula's element amounts), ``n_atoms`` (of
    that formula unit; MP's cell size is not stored), ``formation_energy_per_atom`` (DFT, eV/atom)."""
    verify_file(MP_FE_FILE)
    with gzip.open(data_root() / MP_FE_FILE, "rt") as f:
        raw = json.load(f)
    rows = []
    for mid, entry in raw.items():
        comp = Composition(entry["formula"])
        rows.append({"material_id": str(mid), "reduced_formula": comp.reduced_formula,
                     "composition": {str(e): float(n) for e, n in comp.get_el_amt_dict().items()},
                     "n_atoms": int(round(comp.num_atoms)), "formation_energy_per_atom": float(entry["e_form"]),
                     "e_above_hull": np.nan, "band_gap": np.nan, "source": "mp_formation_energies"})
    return pd.DataFrame(rows)


def hull_reference_table(include_bundled: bool = True) -> pd.DataFrame:
    """Entries of the ``"mp20"`` hull: the MP-20 phases plus the bundled structures whose material_id is not already
    among them (columns as :func:`load_phases_table`). A hull without the bundled structures is not a silent
    fallback: a failure to load them raises."""
    phases = load_phases_table()
    if not include_bundled:
        return phases
    p = bundled("all").properties
    ds = bundled("all")
    if "formation_energy_per_atom" not in p:
        raise ValueError("the bundled set has no formation_energy_per_atom column: cannot add it to the hull")
    known = set(phases["material_id"])
    rows = []
    for s, (_, r) in zip(ds.structures, p.iterrows()):
        mid = str(r.get("material_id", ""))
        ef = r.get("formation_energy_per_atom")
        if mid in known or ef is None or not np.isfinite(ef):
            continue
        comp = {str(k): float(v) for k, v in s.composition.get_el_amt_dict().items()}
        rows.append({"material_id": mid, "reduced_formula": s.composition.reduced_formula, "composition": comp,
                     "n_atoms": len(s), "formation_energy_per_atom": float(ef),
                     "e_above_hull": float(r.get("e_above_hull", np.nan)), "band_gap": float(r.get("band_gap", np.nan)),
                     "source": "bundled"})
    if rows:
        phases = pd.concat([phases, pd.DataFrame(rows)], ignore_index=True)
    return phases


@dataclass
class HullTable:
    """A named convex-hull reference: ``table`` (columns of :func:`load_phases_table` plus ``source``), its ``name``
    (``"mp20+mpfe"`` or ``"mp20"``) and ``counts`` (phases per source) — what every report states."""

    name: str
    table: pd.DataFrame = field(repr=False)
    counts: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        parts = ", ".join(f"{n:,} {src}" for src, n in self.counts.items())
        rule = f"; {MERGE_RULE}" if self.name == "mp20+mpfe" else ""
        return f"{self.name}: DFT formation-energy hull of {len(self.table):,} phases ({parts}{rule})"

    def meta(self) -> dict:
        return {"hull": self.name, "hull_phases": int(len(self.table)), "hull_sources": dict(self.counts),
                "hull_description": self.description}


def merged_hull_file_name() -> str:
    """File name of the precomputed ``mp20+mpfe`` table: its key is made from the two sources' sha256, the bundled
    set's key (its structures are hull phases too) and the merge rule."""
    key = hashlib.sha256("|".join((verify_file(PHASES_FILE), verify_file(MP_FE_FILE), precomputed_bundled_name(),
                                   MERGE_RULE, "v1"))
                         .encode()).hexdigest()[:16]
    return f"hull-mp20+mpfe-{key}.parquet"


def _merged_table() -> pd.DataFrame:
    """``mp20`` entries + the MP formation energies of ids not among them (module docstring: merge rule)."""
    base = hull_reference_table()
    fe = load_mp_formation_energies()
    extra = fe[~fe["material_id"].isin(set(base["material_id"]))]
    return pd.concat([base, extra], ignore_index=True)


@lru_cache(maxsize=4)
def hull_table(name: str = DEFAULT_HULL) -> HullTable:
    """The named hull reference (module docstring): ``"mp20+mpfe"`` (default) or ``"mp20"``."""
    if name not in HULL_NAMES:
        raise ValueError(f"unknown hull {name!r}: use {' or '.join(repr(h) for h in HULL_NAMES)} (bundled, offline) "
                         "or hull='mp' (Materials Project via mp-api)")
    if name == "mp20":
        table = hull_reference_table()
    else:
        file_name = merged_hull_file_name()
        path = find_precomputed(file_name) or cache_dir() / file_name
        table = None
        if path.exists():
            try:
                table = _read_table(path)
            except Exception as exc:  # noqa: BLE001 - rebuilt from the verified sources
                warnings.warn(f"rebuilding the unreadable hull table {path}: {exc}")
                path = cache_dir() / file_name
        if table is None:
            with building("the mp20+mpfe hull table (MP-20 phases + bundled + MP formation energies)", path):
                table = _merged_table()[list(HULL_COLUMNS)]
                table["formation_energy_per_atom"] = table["formation_energy_per_atom"].astype(np.float32)
                _write_table(table, path, compression="zstd", compression_level=19)
        # stored as float32 (±5e-7 eV/atom; keeps the shipped file under 1 MB): the same values either way
        table["formation_energy_per_atom"] = table["formation_energy_per_atom"].astype(np.float32).astype(float)
    counts = {str(k): int(v) for k, v in table["source"].value_counts().items()}
    return HullTable(name, table, counts)


@lru_cache(maxsize=1)
def known_compositions() -> dict[str, tuple[str, float]]:
    """``{reduced formula: (material id, DFT formation energy per atom)}`` of every composition known to Materials
    Project here — the MP-20 phases, the bundled structures and the MP formation energies (the ``"mp20+mpfe"`` hull's
    phases; 47,032 formulas); where several phases share a formula, the lowest-energy one."""
    table = hull_table(DEFAULT_HULL).table
    with warnings.catch_warnings():  # MP's noble-gas phases have no Pauling electronegativity (pymatgen warns)
        warnings.filterwarnings("ignore", message="No Pauling electronegativity")
        formulas = [Composition(c).reduced_formula for c in table["composition"]]
    order = np.argsort(-table["formation_energy_per_atom"].to_numpy(float), kind="stable")  # lowest written last
    ids, efs = table["material_id"].to_numpy(), table["formation_energy_per_atom"].to_numpy(float)
    return {formulas[i]: (str(ids[i]), float(efs[i])) for i in order}
