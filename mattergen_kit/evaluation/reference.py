"""Reference data for evaluation: reference structures (for novelty / distribution metrics) and the
MP-20 phases table (for composition novelty and the convex hull).

``reference`` arguments accept:

* ``"bundled-train"`` (default), ``"bundled-val"``, ``"bundled-test"``, ``"bundled-all"``: the bundled
  mp-bundled-20 splits (:func:`mattergen_kit.datasets.load_bundled`);
* a ``CrystalDataset`` (anything with ``.structures``), or a list of pymatgen ``Structure``;
* ``None``: no reference (novelty and distribution metrics are not computed).
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["resolve_reference", "load_phases_table", "bundled", "hull_reference_table", "cache_dir"]

BUNDLED_PREFIX = "bundled-"


def cache_dir():
    from mattergen_kit.data.paths import cache_root

    d = cache_root() / "evaluation"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _datasets():
    from mattergen_kit import datasets

    return datasets


_BUNDLED: dict[str, Any] = {}


def bundled(split: str):
    """The bundled split as a CrystalDataset (memoised in this process)."""
    if split not in _BUNDLED:
        _BUNDLED[split] = _datasets().load_bundled(split, progress=False)
    return _BUNDLED[split]


def resolve_reference(reference) -> tuple[list | None, list[str] | None, str]:
    """``(structures, ids, name)`` for a reference spec (see module docstring)."""
    if reference is None:
        return None, None, "none"
    if isinstance(reference, str):
        if not reference.startswith(BUNDLED_PREFIX):
            raise ValueError(f"unknown reference {reference!r}: use 'bundled-train', 'bundled-val', 'bundled-test', "
                             "'bundled-all', a CrystalDataset, a list of pymatgen Structures, or None")
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


@lru_cache(maxsize=1)
def load_phases_table() -> pd.DataFrame:
    """MP-20 phases (35k) with ``reduced_formula``, ``composition`` (dict el -> count), ``n_atoms``,
    ``formation_energy_per_atom`` (DFT, eV/atom), ``e_above_hull`` (MP), ``band_gap``."""
    from mattergen_kit.data.paths import data_root, verify_file

    rel = "mp20_phases/mp20_phases.parquet"
    digest = verify_file(rel)
    path = cache_dir() / f"phases-{digest[:16]}.parquet"  # a table (no pickle): see evaluation/cache.py
    if not path.exists():  # shipped precomputed (mattergen_kit.data.precomputed), checksum verified
        from mattergen_kit.data.precomputed import find_precomputed

        path = find_precomputed(path.name) or path
    if path.exists():
        try:
            out = pd.read_parquet(path)
            out["composition"] = [json.loads(c) for c in out["composition"]]
            return out
        except Exception as exc:  # noqa: BLE001 - a broken cache file is rebuilt from the verified source
            warnings.warn(f"rebuilding the unreadable phases cache {path}: {exc}")
            path = cache_dir() / f"phases-{digest[:16]}.parquet"
    from collections import Counter

    from pymatgen.core import Composition

    from mattergen_kit.evaluation.cache import building

    df = pd.read_parquet(data_root() / rel)
    with building(f"the MP-20 phases table ({len(df)} phases)", path):
        out = _phases_table(df, Counter, Composition)
        stored = out.assign(composition=[json.dumps(c, sort_keys=True) for c in out["composition"]])
        tmp = path.with_name(f".{path.name}.tmp")
        stored.to_parquet(tmp)
        tmp.replace(path)
    return out


def _phases_table(df: pd.DataFrame, Counter, Composition) -> pd.DataFrame:
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


def hull_reference_table(include_bundled: bool = True) -> pd.DataFrame:
    """Entries for the DFT formation-energy hull: the MP-20 phases plus the bundled structures whose
    material_id is not already among them (columns as :func:`load_phases_table`)."""
    phases = load_phases_table()
    if not include_bundled:
        return phases
    try:
        ds = bundled("all")
    except Exception as exc:  # noqa: BLE001 - the phases table alone is still a valid hull: say so loudly
        warnings.warn(f"bundled structures left out of the convex hull (hull = MP-20 phases only): {exc}")
        return phases
    p = ds.properties
    if "formation_energy_per_atom" not in p:
        return phases
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
