"""Time load_bundled: first (cold: parse + canonicalise + write the tensor cache) and second (cached) load.

    python benchmarks/bench_data_load.py           # cold only if datasets/cache/ has no cache yet (builds it)
    python benchmarks/bench_data_load.py --cold    # force a cold build into a temporary cache folder
"""

import argparse
import os
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", action="store_true", help="build from scratch in a temporary cache folder")
    ap.add_argument("--split", default="train")
    args = ap.parse_args()
    tmp = None
    if args.cold:
        tmp = tempfile.TemporaryDirectory(prefix="mattergen_kit_cache_")
        os.environ["MATTERGEN_KIT_CACHE"] = tmp.name
    from mattergen_kit import datasets

    cached_before = bool(list(datasets.cache_root().glob(f"{datasets.BUNDLED_NAME}-*.pt")))
    t0 = time.perf_counter()
    ds = datasets.load_bundled(args.split)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds2 = datasets.load_bundled(args.split, progress=False)
    t2 = time.perf_counter() - t0
    assert len(ds) == len(ds2)
    first = "first load (cache already present)" if cached_before else "first load (cold: parse + cache)"
    print(f"{first}: {t1:.2f} s   second load (cached): {t2:.2f} s   "
          f"[{datasets.BUNDLED_NAME}/{args.split}: {len(ds)} crystals, cache {datasets.cache_root()}]")
    t0 = time.perf_counter()
    ds2.to_batch()
    print(f"to_batch: {time.perf_counter() - t0:.2f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
