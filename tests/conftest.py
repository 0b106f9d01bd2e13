"""Shared fixtures. Data fixtures are built from REAL bundled rows (never hand-made numbers)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"


@pytest.fixture(scope="session")
def real_rows() -> pd.DataFrame:
    """The first 40 rows of MP-20's binary/ternary val split, as stored (CDVAE CSV columns)."""
    return pd.read_csv(DATASETS / "mp20_biternary" / "val.csv.gz", nrows=40)


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
    mpts = {s: pd.read_csv(DATASETS / "mpts_52" / f"{s}.csv.gz") for s in ("val", "test")}
    mpts_ids = set(mpts["val"].material_id) | set(mpts["test"].material_id)
    for split in ("val", "test"):
        full = pd.read_csv(DATASETS / "mp20_biternary" / f"{split}.csv.gz")
        shared = full[full.material_id.isin(mpts_ids)].head(8)
        mini = pd.concat([full.head(40), shared]).drop_duplicates("material_id")
        _write_gz_csv(mini, root / "mp20_biternary" / f"{split}.csv.gz")
    mini_mp20_ids = set()
    for split in ("val", "test"):
        mini_mp20_ids |= set(pd.read_csv(root / "mp20_biternary" / f"{split}.csv.gz").material_id)
    for split in ("val", "test"):
        df = mpts[split]
        mini = pd.concat([df.head(40), df[df.material_id.isin(mini_mp20_ids)]]).drop_duplicates("material_id")
        _write_gz_csv(mini, root / "mpts_52" / f"{split}.csv.gz")
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
