"""Write the derived data that ship precomputed in ``datasets/precomputed/`` (see mattergen_kit.data.precomputed).

    python tools/precompute_caches.py            # all of them (uses / builds this machine's caches first)

* the bundled set as ``mp-bundled-20-<key>.npz`` (from ``load_bundled``; checked to load back identically);
* fingerprints of the default reference (1,000 bundled-train crystals) as ``fp-bundled-train-1000-<hash>.npz``;
* the band-gap model (refitted here) as ``bandgap-hgb-<n_train>-<n_test>.npz`` (checked against scikit-learn);
and records each file's sha256 in ``datasets/precomputed/SHA256SUMS``. Nothing is pickled. The MP-20 phases table and
the default convex hull (``mp20+mpfe``) are not shipped: they build from the bundled files in ~2 s and ~7 s at first use
(issue 23: only what cannot be rebuilt in a minute ships precomputed).
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from mattergen_kit.data.bundled import load_bundled, precomputed_bundled_name
    from mattergen_kit.data.dataset import CrystalDataset
    from mattergen_kit.data.precomputed import precomputed_dir, record_precomputed

    out = precomputed_dir()
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()

    ds = load_bundled("all", progress=True)
    path = out / precomputed_bundled_name()
    ds.to_npz(path)
    back = CrystalDataset.from_npz(path)
    assert np.array_equal(back.atom_types, ds.atom_types) and np.array_equal(back.frac_coords, ds.frac_coords)
    assert np.array_equal(back.lattice, ds.lattice) and back.properties.equals(ds.properties), "round trip differs"
    print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, sha256 {record_precomputed(path)[:12]}")

    from mattergen_kit.evaluation.distribution import reference_fingerprints
    from mattergen_kit.evaluation.evaluate import EvaluationSettings
    from mattergen_kit.evaluation.reference import cache_dir, resolve_reference

    settings = EvaluationSettings()
    structs, _, name = resolve_reference(settings.reference)
    reference_fingerprints(structs, name, max_n=settings.max_reference_fingerprints, progress=True)
    fp = sorted(cache_dir().glob(f"fp-{name}-{settings.max_reference_fingerprints}-*.npz"),
                key=lambda p: p.stat().st_mtime)[-1]
    with np.load(fp, allow_pickle=False) as z:  # compressed: the same arrays, about half the bytes
        np.savez_compressed(out / fp.name, **{k: z[k] for k in z.files})
    print(f"{fp.name}: sha256 {record_precomputed(out / fp.name)[:12]}")

    from mattergen_kit.evaluation.properties import band_gap_predictor, export_trees, shipped_model_name

    pred = band_gap_predictor(retrain=True)
    tr, te = load_bundled("train", progress=False), load_bundled("test", progress=False)
    path = out / shipped_model_name(len(tr), len(te))
    export_trees(pred, path)
    print(f"{path.name}: test MAE {pred.metrics['test_mae_eV']:.4f} eV, sha256 {record_precomputed(path)[:12]}")

    print(f"done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
