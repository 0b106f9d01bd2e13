"""Write the small real-row fixtures under ``tests/data/mp_rows/`` from the full source files.

    python tests/data/make_mp_rows.py [--sources DIR]     # default: datasets/ if the files are there, else ../shared/data

The full MP-20 binary/ternary and MPTS-52 CSVs are source files fetched on demand (`mattergen-kit fetch-data
sources`), not part of the tracked tree (issue 23), so the tests read these rows instead — real Materials Project
rows, byte-identical values, the same selections the tests made from the full files before:

* ``mini/<folder>/<split>.csv.gz``: the mini copy of ``datasets/`` used by ``conftest.mini_root`` — MP-20 rows: the
  first 40 of each split plus the first 8 whose material_id is also in MPTS-52 (to exercise the dedupe); MPTS-52
  rows: the first 40 plus every row whose id is in those MP-20 rows;
* ``mp20_biternary_val_head120.csv.gz``: the first 120 rows of MP-20's binary/ternary val split (``real_rows``);
* ``mpts_52_val_large.csv.gz``: the first 60 MPTS-52 val rows and the first three ordered 30–52-atom crystals.
"""

import argparse
import gzip
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = HERE / "mp_rows"


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: the same rows give the same bytes
        f.write(df.to_csv(index=False).encode())


def main() -> None:
    p = argparse.ArgumentParser()
    default = REPO / "datasets" if (REPO / "datasets" / "mpts_52" / "val.csv.gz").is_file() else REPO.parent / "shared" / "data"
    p.add_argument("--sources", default=str(default))
    src = Path(p.parse_args().sources)
    mpts = {s: pd.read_csv(src / "mpts_52" / f"{s}.csv.gz") for s in ("val", "test")}
    mpts_ids = set(mpts["val"].material_id) | set(mpts["test"].material_id)
    mini_mp20_ids = set()
    for split in ("val", "test"):
        full = pd.read_csv(src / "mp20_biternary" / f"{split}.csv.gz")
        shared = full[full.material_id.isin(mpts_ids)].head(8)
        mini = pd.concat([full.head(40), shared]).drop_duplicates("material_id")
        _write(mini, OUT / "mini" / "mp20_biternary" / f"{split}.csv.gz")
        mini_mp20_ids |= set(mini.material_id)
        if split == "val":
            _write(full.head(120), OUT / "mp20_biternary_val_head120.csv.gz")
    for split in ("val", "test"):
        df = mpts[split]
        mini = pd.concat([df.head(40), df[df.material_id.isin(mini_mp20_ids)]]).drop_duplicates("material_id")
        _write(mini, OUT / "mini" / "mpts_52" / f"{split}.csv.gz")
    val = mpts["val"].head(400)
    large = []
    for k, cif in enumerate(val.cif):
        s = Structure.from_str(cif, fmt="cif")
        if 30 <= len(s) <= 52 and s.is_ordered:
            large.append(k)
        if len(large) == 3:
            break
    _write(val.iloc[sorted(set(range(60)) | set(large))], OUT / "mpts_52_val_large.csv.gz")
    for f in sorted(OUT.rglob("*.csv.gz")):
        print(f.relative_to(HERE), f.stat().st_size)


if __name__ == "__main__":
    main()
