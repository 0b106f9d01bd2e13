"""Make ``datasets/mp20_phases/mp20_phases.parquet`` from LeMaterial's upstream file: the six columns the kit reads,
zstd-compressed (1.1 MB instead of 3.3 MB; issue 23's repository budget).

    python tools/slim_mp20_phases.py                       # from ../shared/data/mp20_phases/mp20_phases.parquet
    python tools/slim_mp20_phases.py --upstream PATH       # a downloaded copy (see datasets/PROVENANCE.md)

The upstream file (LeMaterial/lemat-genbench commit 2383022e9ef1, ``data/mp20_hulls/mace_above_hull_dataset.parquet``,
sha256 28e3ca2b5e37…) is checked before anything is written. Dropped: the five ML-potential total energies
(``mace_energy``, ``orb_energy``, ``uma_energy``, ``ensemble_energy``, ``energy``), which no part of the kit reads.
The kept columns are copied value for value (checked after writing); rows keep their order.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from mattergen_kit.data.paths import sha256_file

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_SHA256 = "28e3ca2b5e3757303ce79882156d0d8335f1c741b1a08f95741b884a09839136"
KEEP = ["material_id", "pretty_formula", "species_at_sites", "e_above_hull", "formation_energy_per_atom", "band_gap"]
OUT = REPO / "datasets" / "mp20_phases" / "mp20_phases.parquet"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--upstream", default=str(REPO.parent / "shared" / "data" / "mp20_phases" / "mp20_phases.parquet"))
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    upstream = Path(args.upstream)
    digest = sha256_file(upstream)
    if digest != UPSTREAM_SHA256:
        print(f"{upstream} has sha256 {digest[:12]}…, not the upstream file ({UPSTREAM_SHA256[:12]}…)", file=sys.stderr)
        return 1
    full = pd.read_parquet(upstream)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    full[KEEP].to_parquet(tmp, index=False, compression="zstd", compression_level=19)
    slim = pd.read_parquet(tmp)
    for col in KEEP:
        a, b = full[col], slim[col]
        same = [list(x) == list(y) for x, y in zip(a, b)] if col == "species_at_sites" else (a.equals(b),)
        if not all(same):
            tmp.unlink()
            print(f"column {col} changed on the way: nothing written", file=sys.stderr)
            return 1
    tmp.replace(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(slim):,} rows, columns {KEEP}); "
          f"sha256 {sha256_file(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
