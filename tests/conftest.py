"""Shared fixtures. Data fixtures are built from REAL bundled rows (never hand-made numbers)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"
#: real Materials Project rows cut from the source files (tests/data/make_mp_rows.py): the full source CSVs are
#: fetched on demand, not tracked (`mattergen-kit fetch-data sources`)
MP_ROWS = REPO / "tests" / "data" / "mp_rows"


@pytest.fixture(scope="session")
def real_rows() -> pd.DataFrame:
    """The first 40 rows of MP-20's binary/ternary val split, as stored (CDVAE CSV columns)."""
    return pd.read_csv(MP_ROWS / "mp20_biternary_val_head120.csv.gz", nrows=40)


@pytest.fixture(scope="session")
def real_structures(real_rows):
    from pymatgen.core import Structure

    return [Structure.from_str(c, fmt="cif") for c in real_rows["cif"]]


def _write_gz_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        df.to_csv(f, index=False)


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    """A small copy of ``datasets/`` (same layout, real rows, its own SHA256SUMS) for fast pipeline tests.

    MPTS-52 rows include some whose material_id is also in the mini MP-20 files (to exercise the dedupe).
    """
    root = tmp_path_factory.mktemp("mini_datasets")
    for rel in ("mp20_biternary/val.csv.gz", "mp20_biternary/test.csv.gz", "mpts_52/val.csv.gz", "mpts_52/test.csv.gz"):
        _write_gz_csv(pd.read_csv(MP_ROWS / "mini" / rel), root / rel)  # made by tests/data/make_mp_rows.py
    for split in ("train", "val", "test"):
        df = pd.read_csv(DATASETS / "aflow_bulk_modulus" / f"{split}.csv.gz", nrows=25)
        _write_gz_csv(df, root / "aflow_bulk_modulus" / f"{split}.csv.gz")
    ph = pd.read_parquet(DATASETS / "mp20_phases" / "mp20_phases.parquet").head(200)
    (root / "mp20_phases").mkdir()
    ph.to_parquet(root / "mp20_phases" / "mp20_phases.parquet")
    lines = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            lines.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(root).as_posix()}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def mini_env(mini_root, monkeypatch, tmp_path_factory):
    """Point MATTERGEN_KIT_DATA at the mini copy and MATTERGEN_KIT_CACHE at a session-wide temp cache."""
    cache = tmp_path_factory.getbasetemp() / "mini_cache"
    monkeypatch.setenv("MATTERGEN_KIT_DATA", str(mini_root))
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(cache))
    return mini_root
