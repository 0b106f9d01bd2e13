"""The bundled data: the "mp-bundled-20" set with its fixed split, the AFLOW bulk moduli and MP-20 phases.

Bundled set "mp-bundled-20" (design §2) — *not* MP-20:
  MP-20's binary/ternary val+test rows (``mp20_biternary/``) plus MPTS-52 val+test rows
  (``mpts_52/``) with ≤ 20 atoms whose material_id is not already present, filtered like MP-20
  (e_above_hull ≤ 0.08 eV/atom, formation energy ≤ 2 eV/atom) and without MatterGen's excluded
  elements (noble gases, Tc, Pm, Z ≥ 84). Split train/val/test = 80/10/10 by a seeded hash of the
  material_id (:func:`split_of`), recorded in ``datasets/splits/mp-bundled-20.csv``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mattergen_kit.data.bundled_large import (LARGE_MAX_ATOMS, LARGE_NAME, NEW_FILES, SPLIT_SEED_52,
                                              large_splits_file, new_row_records, read_large_splits,
                                              structure_duplicates)
from mattergen_kit.data.csv_table import _csv_rows, _read_table
from mattergen_kit.data.dataset import CACHE_VERSION, MAX_ATOMS, CrystalDataset, _cached, _isnum
from mattergen_kit.data.parsing import process_records
from mattergen_kit.data.paths import (SourceFilesMissing, cache_root, data_root, read_sha256sums, sha256_file, source_digest,
                                      source_path, verify_file)
from mattergen_kit.data.report import LoadReport, Skip

__all__ = ["load_bundled", "num_atoms_histogram", "load_aflow_bulk_modulus", "load_mp20_phases", "split_of",
           "BUNDLED_NAME"]

BUNDLED_NAME = "mp-bundled-20"
E_ABOVE_HULL_MAX = 0.08  # eV/atom, MP-20's filter
FORMATION_ENERGY_MAX = 2.0  # eV/atom, MP-20's filter
SPLIT_SEED = "mattergen_kit/mp-bundled-20/v1"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
BUNDLED_FILES = ("mp20_biternary/val.csv.gz", "mp20_biternary/test.csv.gz", "mpts_52/val.csv.gz",
                 "mpts_52/test.csv.gz")


def split_of(material_id: str, seed: str = SPLIT_SEED, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> str:
    """Deterministic split of a material id: u = sha256(seed + ":" + id) as a number in [0, 1);
    train if u < 0.8, val if u < 0.9, else test. ``fractions``: three shares ≥ 0 that sum to 1 (ValueError else:
    (1.5, 0, 0) used to put everything in train without a word)."""
    if fractions != SPLIT_FRACTIONS and (len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions)
                                         or abs(sum(fractions) - 1) > 1e-9):
        raise ValueError(f"fractions must be three shares (train, val, test), each in [0, 1], summing to 1; "
                         f"got {fractions!r}")
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
    try:
        for rel in BUNDLED_FILES:
            verify_file(rel, root)
    except SourceFilesMissing as err:
        raise SourceFilesMissing(f"{BUNDLED_NAME} has to be built from its source files (no precomputed copy in "
                                 f"{root / 'precomputed'} matches them and none is cached): {err}") from None
    all_records, all_props = [], {}
    seen: set[str] = set()
    for rel in BUNDLED_FILES:
        df = _read_table(source_path(rel, root))
        mp20 = rel.startswith("mp20_biternary")
        sub_report = LoadReport()
        records, rows_props = _csv_rows(df, source_path(rel, root), rel, sub_report, "cif", filters)
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
    ds = _assemble_rows(results, all_props, report, BUNDLED_NAME)
    mapping = _read_or_write_splits(list(ds.properties["material_id"]), root)
    ds.properties["split"] = [mapping[m] for m in ds.properties["material_id"]]
    return ds


def _assemble_rows(results, all_props: dict, report: LoadReport, name: str) -> CrystalDataset:
    """The parsed rows as a dataset with the bundled property columns; rows that failed are listed in ``report``."""
    kept_props = []
    types, coords, lats, counts = [], [], [], []
    for res in results:
        rel, row = res.row
        given = all_props[res.row]
        if not res.ok:
            report.skipped.append(Skip(rel, row, res.reason, res.kind, given["material_id"]))
            continue
        labels = res.labels
        types.append(res.atom_types), coords.append(res.frac_coords), lats.append(res.lattice)
        counts.append(len(res.atom_types))
        rec = {"material_id": given["material_id"], "formula": labels["formula"],
               "band_gap": given.get("band_gap") if _isnum(given.get("band_gap")) else np.nan,
               "formation_energy_per_atom": given.get("formation_energy_per_atom")
               if _isnum(given.get("formation_energy_per_atom")) else np.nan,
               "e_above_hull": given.get("e_above_hull") if _isnum(given.get("e_above_hull")) else np.nan,
               "spacegroup": int(given["spacegroup"]) if _isnum(given.get("spacegroup")) else labels["spacegroup"],
               "chemical_system": labels["chemical_system"], "hhi_production": labels["hhi_production"],
               "hhi_reserve": labels["hhi_reserve"], "num_atoms": labels["num_atoms"], "source": rel}
        kept_props.append(rec)
    report.kept = len(counts)
    ds = CrystalDataset._assemble(types, coords, lats, counts, kept_props, report, name)
    ds.properties["band_gap"] = ds.properties["band_gap"].astype(float)
    return ds


def _bundled_key(root: Path) -> tuple[dict[str, str], str]:
    """``(raw file digests, cache key)``: the key names the tensor cache and the shipped precomputed set."""
    sums = read_sha256sums(root)
    digests = {rel: source_digest(rel, root, sums) for rel in BUNDLED_FILES}  # recorded digests if not fetched
    key = hashlib.sha256(json.dumps([digests, CACHE_VERSION, E_ABOVE_HULL_MAX, FORMATION_ENERGY_MAX, MAX_ATOMS,
                                     SPLIT_SEED], sort_keys=True).encode()).hexdigest()[:16]
    return digests, key


def precomputed_bundled_name() -> str:
    """File name of the shipped precomputed bundled set for the current raw data (``datasets/precomputed/``)."""
    return f"{BUNDLED_NAME}-{_bundled_key(data_root())[1]}.npz"


def _bundled_all(workers: int = 2, progress: bool = True, use_cache: bool = True) -> CrystalDataset:
    root = data_root()
    digests, key = _bundled_key(root)
    split_path = splits_file(root)
    split_digest = sha256_file(split_path) if split_path.exists() else "none"
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
    if use_cache:
        ds = _precomputed_bundled(f"{BUNDLED_NAME}-{key}.npz", split_path)
        if ds is not None:
            ds.save(path)  # the usual tensor cache from now on
            return ds
    ds = _build_bundled(root, digests, workers, progress)
    if use_cache:
        ds.save(path)
    return ds


def _precomputed_bundled(name: str, split_path: Path) -> CrystalDataset | None:
    """The shipped precomputed bundled set (:mod:`mattergen_kit.data.precomputed`) if one matches this cache key,
    its checksum and the splits file; else None (the set is then built from the CSVs)."""
    from mattergen_kit.data.precomputed import find_precomputed

    shipped = find_precomputed(name)
    if shipped is None or not split_path.exists():
        return None
    try:
        ds = CrystalDataset.from_npz(shipped)
        table = pd.read_csv(split_path, dtype=str)
        if dict(zip(table.material_id, table.split)) != dict(zip(ds.properties.material_id, ds.properties.split)):
            raise ValueError("its splits differ from the splits file")
        return ds
    except Exception as exc:  # noqa: BLE001 - never worse than building it
        import warnings

        warnings.warn(f"precomputed {shipped} not used ({type(exc).__name__}: {exc}); building the bundled set")
        return None


def _large_key(root: Path) -> tuple[dict[str, str], str]:
    """``(raw file digests, cache key)`` of mp-bundled-52: the 20-atom set's key, the new files' sha256, the record
    of the new rows' splits and the filter settings."""
    sums = read_sha256sums(root)
    digests = {rel: source_digest(rel, root, sums) for rel in NEW_FILES}
    record = large_splits_file(root)
    key = hashlib.sha256(json.dumps([_bundled_key(root)[1], digests, sha256_file(record) if record.exists() else "",
                                     CACHE_VERSION, E_ABOVE_HULL_MAX, FORMATION_ENERGY_MAX, LARGE_MAX_ATOMS],
                                    sort_keys=True).encode()).hexdigest()[:16]
    return digests, key


def build_new_rows(root: Path, known: dict[str, str], workers: int = 2, progress: bool = True,
                   use_cache: bool = True) -> CrystalDataset:
    """The new rows of mp-bundled-52 (bundled_large.py) parsed and canonicalised, before structure matching and
    without a split: every row of NEW_FILES that passes the filters with ≤ 52 atoms and whose material id is new.
    Cached (``mp-bundled-52-new-<key>.pt``, keyed by the raw files, the known ids and the filters)."""
    filters = {"max_atoms": LARGE_MAX_ATOMS, "max_atoms_canonical": LARGE_MAX_ATOMS,
               "e_above_hull_max": E_ABOVE_HULL_MAX, "formation_energy_max": FORMATION_ENERGY_MAX,
               "exclude_elements": True}
    digests = {rel: source_digest(rel, root) for rel in NEW_FILES}
    key = hashlib.sha256(json.dumps([digests, sorted(known.items()), filters, CACHE_VERSION],
                                    sort_keys=True).encode()).hexdigest()[:16]

    def build() -> CrystalDataset:
        try:
            for rel in NEW_FILES:
                verify_file(rel, root)
        except SourceFilesMissing as err:
            raise SourceFilesMissing(f"{LARGE_NAME} is built from source files at first use: {err}") from None
        report = LoadReport(name=f"{LARGE_NAME} new rows", sources=list(NEW_FILES))
        records, props = new_row_records(root, known, filters, report)
        results = process_records(records, workers=workers, progress=progress, desc=f"building {LARGE_NAME}")
        return _assemble_rows(results, props, report, f"{LARGE_NAME} new rows")

    return _cached(f"{LARGE_NAME}-new-{key}.pt", build, use_cache)


def _sources(ds: CrystalDataset) -> dict[str, str]:
    """material_id → the raw file it was read from."""
    return dict(zip(ds.properties["material_id"], ds.properties["source"]))


def write_large_record(workers: int = 2, progress: bool = True) -> dict:
    """Match every new row against every crystal already in and write splits/mp-bundled-52.csv (bundled_large.py):
    a kept row gets ``split_of(id, SPLIT_SEED_52)``, a matching one "duplicate" and the id it matches. Returns
    counts. (tools/build_bundled_52.py runs this; the loader only reads the file.)"""
    root = data_root()
    base = _bundled_all(workers=workers, progress=progress)
    new = build_new_rows(root, _sources(base), workers, progress)
    dups = structure_duplicates(base.structures, new.structures, progress=progress)
    all_ids = list(base.properties["material_id"]) + list(new.properties["material_id"])
    record = [(mid, "duplicate", all_ids[dups[i]]) if i in dups else (mid, split_of(mid, seed=SPLIT_SEED_52), "")
              for i, mid in enumerate(new.properties["material_id"])]
    path = large_splits_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(record, columns=["material_id", "split", "duplicate_of"]).to_csv(path, index=False)
    return {"new_rows": len(record), "structure_duplicates": len(dups),
            "duplicates_of_mp_bundled_20": sum(j < len(base) for j in dups.values()), "record": str(path)}


def _large_all(workers: int = 2, progress: bool = True, use_cache: bool = True) -> CrystalDataset:
    """mp-bundled-20 (all splits, unchanged) + the kept new rows with the splits recorded in splits/mp-bundled-52.csv."""
    root = data_root()
    _, key = _large_key(root)
    path = cache_root() / f"{LARGE_NAME}-{key}.pt"
    if use_cache and path.exists():
        try:
            return CrystalDataset.load(path)
        except Exception:  # stale or damaged cache: rebuilt below
            pass
    base = _bundled_all(workers=workers, progress=progress, use_cache=use_cache)
    record = read_large_splits(root)
    new = build_new_rows(root, _sources(base), workers, progress, use_cache)
    report = LoadReport(name=LARGE_NAME, sources=list(BUNDLED_FILES) + list(NEW_FILES),
                        skipped=list(new.report.skipped))
    fate = dict(zip(record.material_id, record.split))
    match = dict(zip(record.material_id, record.duplicate_of))
    missing = [m for m in new.properties["material_id"] if m not in fate]
    if missing:
        raise ValueError(f"{large_splits_file(root)} lacks {len(missing)} new rows of the raw data (e.g. {missing[:3]}); "
                         "the raw data changed: rerun `python tools/build_bundled_52.py` and commit the new file")
    keep = np.array([fate[m] != "duplicate" for m in new.properties["material_id"]], dtype=bool)
    for m, src in zip(new.properties["material_id"][~keep], new.properties["source"][~keep]):
        report.skipped.append(Skip(src, None, f"structure matches {match[m]} (StructureMatcher ltol 0.2, stol 0.3, "
                                   "angle_tol 5°; tools/build_bundled_52.py)", "duplicate", m))
    new = new.subset(keep)
    new.properties["split"] = [fate[m] for m in new.properties["material_id"]]
    report.kept = len(base) + len(new)
    ds = CrystalDataset.concat([base, new], name=LARGE_NAME)
    # every row of NEW_FILES has its fate in the new rows' report (mpts_52 rows already in mp-bundled-20 are
    # "duplicate material_id (already in mp-bundled-20)"): drop the 20-atom set's verdicts on those files
    base_skips = [s for s in base.report.skipped if s.source not in NEW_FILES]
    ds.report = LoadReport(name=LARGE_NAME, kept=report.kept, skipped=base_skips + report.skipped,
                           sources=report.sources, notes=dict(base.report.notes))
    if use_cache:
        ds.save(path)
    return ds


def load_bundled(split: str = "train", *, max_atoms: int = 20, workers: int = 2, progress: bool = True,
                 use_cache: bool = True) -> CrystalDataset:
    """The bundled "mp-bundled-20" set (see module docstring): split in {"train", "val", "test", "all"}.

    ``max_atoms=52``: "mp-bundled-52" (:mod:`mattergen_kit.data.bundled_large`), the same 16,712 crystals in the
    same splits plus every other crystal with ≤ 52 atoms of the bundled files, deduplicated by material id and by
    structure; its first load parses the new rows (a few minutes) and caches the set under its own key.

    The raw CSVs are verified against ``datasets/SHA256SUMS`` on every call (a corrupt file raises
    :class:`~mattergen_kit.data.paths.DataIntegrityError`). The first call parses and canonicalises
    everything (a few minutes on 2 cores, with a progress bar) and saves a tensor cache in
    ``datasets/cache/`` keyed by the files' sha256; later calls read that cache in about a second.
    """
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"split must be one of 'train', 'val', 'test', 'all' (got {split!r})")
    if max_atoms not in (MAX_ATOMS, LARGE_MAX_ATOMS):
        raise ValueError(f"max_atoms must be {MAX_ATOMS} (mp-bundled-20) or {LARGE_MAX_ATOMS} (mp-bundled-52), got "
                         f"{max_atoms!r}; for another limit load max_atoms=52 and take ds.subset(ds.num_atoms <= n)")
    if max_atoms == LARGE_MAX_ATOMS:
        ds, name = _large_all(workers=workers, progress=progress, use_cache=use_cache), LARGE_NAME
    else:
        ds, name = _bundled_all(workers=workers, progress=progress, use_cache=use_cache), BUNDLED_NAME
    if split == "all":
        ds.name = f"{name}/all"
        return ds
    return ds.subset(ds.properties["split"].to_numpy() == split, name=f"{name}/{split}")


def num_atoms_histogram(split: str = "train", max_atoms: int = MAX_ATOMS) -> np.ndarray:
    """p[N], N = 0..max_atoms: the fraction of bundled crystals (canonical cells) with N atoms — the sampler's prior
    (``max_atoms=52``: of mp-bundled-52)."""
    return load_bundled(split, max_atoms=max_atoms, progress=False).num_atoms_histogram(max_atoms)


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
    species_at_sites, e_above_hull, formation_energy_per_atom, band_gap, and
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
