"""Build the record of "mp-bundled-52" (mattergen_kit/data/bundled_large.py): copy the new raw files into datasets/,
match every new crystal against every crystal already in (all splits), give the kept ones a seeded split, and
write ``datasets/splits/mp-bundled-52.csv`` plus the counts tables of datasets/README.md.

    python tools/build_bundled_52.py                    # ~10 min on 2 busy cores (parsing + structure matching)
    python tools/build_bundled_52.py --audit-old        # also count structure duplicates across mp-bundled-20's splits

Raw files: ``mp20_extra/*.csv.gz`` are copied byte for byte from ``--shared`` (default ../shared/data) when
datasets/ lacks them, and their sha256 added to datasets/SHA256SUMS; ``mpts_52/`` is already bundled.
A rerun with the same raw data writes the same file (the split is a hash of the material id, the matching
order is the file order).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mattergen_kit.data.bundled import load_bundled, write_large_record  # noqa: E402
from mattergen_kit.data.bundled_large import LARGE_NAME, NEW_FILES, size_band, structure_duplicates  # noqa: E402
from mattergen_kit.data.paths import data_root, read_sha256sums, sha256_file  # noqa: E402


def copy_raw(shared: Path, root: Path) -> None:
    """Copy the NEW_FILES datasets/ lacks from ``shared`` and record their sha256 in SHA256SUMS."""
    sums = read_sha256sums(root)
    lines = []
    for rel in NEW_FILES:
        target = root / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared / rel, target)
            print(f"copied {shared / rel} -> {target}")
        if rel not in sums:
            lines.append(f"{sha256_file(target)}  ./{rel}\n")
    if lines:
        with open(root / "SHA256SUMS", "a") as f:
            f.writelines(lines)
        print(f"added {len(lines)} lines to {root / 'SHA256SUMS'}")


def counts_tables(ds) -> str:
    """Markdown: crystals per split by size band and by number of elements."""
    props = ds.properties
    band = pd.Series(size_band(props["num_atoms"].to_numpy()), name="band")
    elements = props["chemical_system"].map(lambda s: len(str(s).split("-"))).clip(upper=6)
    out = []
    for title, key in (("atoms per cell", band), ("elements per crystal (6 = 6 or more)", elements)):
        table = pd.crosstab(key.to_numpy(), props["split"].to_numpy()).reindex(columns=["train", "val", "test"])
        table["all"] = table.sum(1)
        table.loc["all"] = table.sum(0)
        out.append(f"| {title} | train | val | test | all |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {idx} | " + " | ".join(f"{int(v):,}" for v in row) + " |" for idx, row in table.iterrows()))
    return "\n\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--audit-old", action="store_true")
    p.add_argument("--summary", default="runs/bundled52/summary.json")
    args = p.parse_args()
    root = data_root()
    copy_raw(Path(args.shared), root)
    start = time.perf_counter()
    counts = write_large_record(workers=args.workers)
    print(f"{counts} ({time.perf_counter() - start:.0f} s)", flush=True)
    ds = load_bundled("all", max_atoms=52, progress=False)
    summary = {"name": LARGE_NAME, "crystals": len(ds), "splits": ds.properties["split"].value_counts().to_dict(),
               **counts, "by_source": ds.properties["source"].value_counts().to_dict(),
               "max_atoms": int(ds.num_atoms.max()), "report": ds.report.counts()}
    if args.audit_old:  # structure duplicates between the old set's splits (kept as they are: old figures hold)
        base = load_bundled("all", progress=False)
        props = base.properties
        order = np.argsort(props["split"].map({"train": 0, "val": 1, "test": 2}).to_numpy(), kind="stable")
        ordered = [base.structures[i] for i in order]
        within = structure_duplicates([], ordered)
        cross = sum(props["split"].iloc[order[i]] != props["split"].iloc[order[j]] for i, j in within.items())
        summary["old_structure_duplicates"] = {"pairs": len(within), "across_splits": int(cross)}
    print(json.dumps(summary, indent=1))
    print(counts_tables(ds))
    Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
    Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n" + counts_tables(ds) + "\n")


if __name__ == "__main__":
    main()
