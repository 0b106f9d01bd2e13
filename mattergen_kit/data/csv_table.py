"""Loading a CDVAE-format CSV (``.csv`` / ``.csv.gz``: a ``cif`` column plus property columns)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mattergen_kit.data.dataset import (CACHE_VERSION, COLUMN_ALIASES, NUMERIC_COLUMNS, CrystalDataset, _cached,
                                        _isnan, _isnum, _mid, _options_key)
from mattergen_kit.data.parsing import process_records
from mattergen_kit.data.paths import sha256_file
from mattergen_kit.data.report import LoadReport, Skip, check_load_options

__all__ = ["load_csv"]


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
    # pandas reads '', 'NaN', 'NA', 'N/A', 'n/a', 'null', 'None', ... as NaN: such values are missing labels
    # (NaN → the null embedding), not errors, but they are counted per column so that none goes unnoticed
    # (a value that is neither a number nor such a marker, e.g. '2.1 eV', is a skip below).
    for col, n in df.drop(columns=[cif_column]).isna().sum().items():
        if n:
            report.notes[f"{col}: missing values (empty or NA markers such as 'n/a'; kept as unknown labels)"] = int(n)
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
    Empty cells and the NA markers pandas reads as NaN ('NaN', 'NA', 'N/A', 'n/a', 'null', 'None', ...) are
    missing labels, kept as unknown; ``.report.notes`` counts them per column.
    The result is cached in the cache folder, keyed by the file's sha256 and the options.
    """
    check_load_options(path, max_atoms=max_atoms, e_above_hull_max=e_above_hull_max,
                       formation_energy_max=formation_energy_max)
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
    key = sha256_file(path)[:16] + "-" + _options_key(v=CACHE_VERSION, cif_column=cif_column, name=name,
                                                       report=2, **filters)  # report 2: counts missing values
    return _cached(f"csv-{key}.pt", build)
