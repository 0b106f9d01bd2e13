"""Distribution metrics of a generated set against a reference set (CDVAE's definitions).

Fingerprints (matminer):

* structure: the mean over sites of ``CrystalNNFingerprint.from_preset("ops")`` site fingerprints (61-d);
* composition: ``ElementProperty.from_preset("magpie")`` (132-d), standardised with the mean and standard
  deviation of the reference set (CDVAE used fixed MP-20 train statistics).

Coverage (CDVAE ``compute_cov``), with ``d^S`` / ``d^C`` the Euclidean distances between structure /
normalised composition fingerprints of generated g and reference r:

    COV-R (recall)    = (1/|R|) Σ_r 1[ min_g d^S(g,r) ≤ δ_S  ∧  min_g d^C(g,r) ≤ δ_C ]
    COV-P (precision) = (1/|G|) Σ_g 1[ min_r d^S(g,r) ≤ δ_S  ∧  min_r d^C(g,r) ≤ δ_C ]

with CDVAE's MP-20 thresholds δ_S = 0.4, δ_C = 10. Structures whose fingerprint fails count as not covered
(precision keeps them in the denominator |G|).

Wasserstein-1 distances (scipy) between the generated and reference distributions of density (g/cm³),
number of distinct elements, and number of atoms per cell.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Sequence

import numpy as np

from mattergen_kit.data.precomputed import find_precomputed
from mattergen_kit.evaluation.cache import building, load_arrays, save_arrays
from mattergen_kit.evaluation.reference import cache_dir

__all__ = ["structure_fingerprint", "composition_fingerprint", "fingerprints", "coverage", "wasserstein_metrics",
           "reference_fingerprints", "STRUCT_CUTOFF", "COMP_CUTOFF"]

STRUCT_CUTOFF = 0.4
COMP_CUTOFF = 10.0

_FEATURIZERS: dict = {}


def _crystalnn():
    if "cnn" not in _FEATURIZERS:
        from matminer.featurizers.site import CrystalNNFingerprint

        _FEATURIZERS["cnn"] = CrystalNNFingerprint.from_preset("ops")
    return _FEATURIZERS["cnn"]


def _magpie():
    if "magpie" not in _FEATURIZERS:
        from matminer.featurizers.composition import ElementProperty

        _FEATURIZERS["magpie"] = ElementProperty.from_preset("magpie", impute_nan=True)
    return _FEATURIZERS["magpie"]


def structure_fingerprint(structure) -> np.ndarray | None:
    """Mean CrystalNN "ops" site fingerprint (None if it fails, e.g. an isolated atom)."""
    try:
        fp = _crystalnn()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sites = [fp.featurize(structure, i) for i in range(len(structure))]
        v = np.asarray(sites, float).mean(0)
        return v if np.all(np.isfinite(v)) else None
    except Exception:
        return None


_COMP_CACHE: dict[str, np.ndarray] = {}
_ELEMENT_TABLE: dict[str, np.ndarray] = {}


def _element_row(symbol: str) -> np.ndarray:
    """The 22 Magpie properties of one element (matminer's MagpieData, NaN imputed as matminer does)."""
    if symbol not in _ELEMENT_TABLE:
        from pymatgen.core import Element

        ep = _magpie()
        el = Element(symbol)
        _ELEMENT_TABLE[symbol] = np.array([ep.data_source.get_elemental_property(el, a) for a in ep.features], float)
    return _ELEMENT_TABLE[symbol]


def composition_fingerprint(composition) -> np.ndarray | None:
    """Magpie composition features (None if they fail); memoised per formula.

    A vectorised re-implementation of matminer ``ElementProperty.from_preset("magpie").featurize`` (same order:
    for each of the 22 properties: minimum, maximum, range, mean, avg_dev, mode — fraction-weighted, mode = the
    smallest value among the most abundant elements); equality with matminer is tested. ~100× faster.
    """
    try:
        from pymatgen.core import Composition

        comp = Composition(composition)
        key = comp.formula
        if key not in _COMP_CACHE:
            el_comp = comp.element_composition
            syms = [e.symbol for e in el_comp]
            w = np.array([float(el_comp[e]) for e in el_comp])
            E = np.stack([_element_row(x) for x in syms])  # (k, 22)
            wn = w / w.sum()
            mean = wn @ E
            mn, mx = E.min(0), E.max(0)
            avg_dev = wn @ np.abs(E - mean)
            top = np.isclose(w, w.max())
            mode = E[top].min(0)
            _COMP_CACHE[key] = np.stack([mn, mx, mx - mn, mean, avg_dev, mode], 1).reshape(-1)
        v = _COMP_CACHE[key]
        return v if np.all(np.isfinite(v)) else None
    except Exception:
        return None


def _structure_fingerprint_chunk(items: list) -> list:
    """``[(index, fingerprint or None)]`` of ``[(index, structure dict or None)]`` (a Dask task; no pickled objects
    beyond plain dicts and arrays)."""
    from pymatgen.core import Structure

    return [(i, None if d is None else structure_fingerprint(Structure.from_dict(d))) for i, d in items]


def fingerprints(structures: Sequence, progress: bool = False, desc: str = "fingerprints", map_fn=None,
                 chunk: int = 25):
    """``(struct_fps, comp_fps)``: lists with an array or None per structure.

    ``map_fn(func, items)`` (e.g. a Dask cluster's, :func:`mattergen_kit.evaluation.cluster.dask_map`): the CrystalNN
    structure fingerprints — ~0.25 s per crystal, the slow part — are computed there in chunks of ``chunk``; results
    may come back in any order and are put back in place."""
    from tqdm.auto import tqdm

    if map_fn is not None:
        items = [(i, None if s is None else s.as_dict()) for i, s in enumerate(structures)]
        sf = [None] * len(items)
        with tqdm(total=len(items), desc=desc, disable=not progress, leave=False) as bar:
            for part in map_fn(_structure_fingerprint_chunk, [items[k:k + chunk] for k in range(0, len(items), chunk)]):
                for i, fp in part:
                    sf[i] = fp
                bar.update(len(part))
        return sf, [None if s is None else composition_fingerprint(s.composition) for s in structures]
    sf, cf = [], []
    for s in tqdm(structures, desc=desc, disable=not progress, leave=False):
        if s is None:
            sf.append(None)
            cf.append(None)
            continue
        sf.append(structure_fingerprint(s))
        cf.append(composition_fingerprint(s.composition))
    return sf, cf


def reference_fingerprints(structures: Sequence, name: str, max_n: int | None = 1000, seed: int = 0,
                           progress: bool = True):
    """Fingerprints of (a deterministic subsample of at most ``max_n``) reference structures, cached on disk
    under ``datasets/cache/evaluation/`` by the reference's name and content hash."""

    n = len(structures)
    idx = np.arange(n)
    if max_n is not None and n > max_n:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
    h = hashlib.sha1()
    for i in idx:
        s = structures[i]
        h.update(f"{s.composition.formula}|{np.round(s.lattice.abc, 4).tolist()}".encode())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[:40]
    path = cache_dir() / f"fp-{safe}-{len(idx)}-{h.hexdigest()[:12]}.npz"
    z = load_arrays(path)
    if z is None:  # the default reference's fingerprints ship precomputed (mattergen_kit.data.precomputed)

        shipped = find_precomputed(path.name)
        z = load_arrays(shipped) if shipped is not None else None
    if z is not None:
        return {"idx": z["idx"], "struct": _unstack(z["struct"], z["struct_ok"]),
                "comp": _unstack(z["comp"], z["comp_ok"]),
                "structures_meta": {k: z[k] for k in ("density", "n_elements", "n_atoms")}}
    sub = [structures[i] for i in idx]
    with building(f"reference fingerprints of {len(sub)} {name} structures", path):
        sf, cf = fingerprints(sub, progress=progress, desc=f"reference fingerprints ({name})")
    out = {"idx": idx, "struct": sf, "comp": cf, "structures_meta": _basic_stats(sub)}
    (s_arr, s_ok), (c_arr, c_ok) = _stack_or_nan(sf), _stack_or_nan(cf)
    save_arrays(path, idx=idx, struct=s_arr, struct_ok=s_ok, comp=c_arr, comp_ok=c_ok, **out["structures_meta"])
    return out


def _stack_or_nan(fps) -> tuple[np.ndarray, np.ndarray]:
    """A list of vectors or None -> ((n, d) float array with NaN rows for None, (n,) bool present)."""
    ok = np.array([f is not None for f in fps], bool)
    dim = next((len(f) for f in fps if f is not None), 1)
    arr = np.full((len(fps), dim), np.nan)
    for i, f in enumerate(fps):
        if f is not None:
            arr[i] = f
    return arr, ok


def _unstack(arr: np.ndarray, ok: np.ndarray) -> list:
    return [row if present else None for row, present in zip(arr, ok)]


def coverage(gen_struct, gen_comp, ref_struct, ref_comp, struct_cutoff: float = STRUCT_CUTOFF,
             comp_cutoff: float = COMP_CUTOFF) -> dict:
    """``{"cov_recall", "cov_precision", "n_gen", "n_ref"}`` (module docstring). Inputs: lists of arrays/None."""
    from scipy.spatial.distance import cdist

    n_gen, n_ref = len(gen_struct), len(ref_struct)
    g_ok = np.array([a is not None and b is not None for a, b in zip(gen_struct, gen_comp)], bool)
    r_ok = np.array([a is not None and b is not None for a, b in zip(ref_struct, ref_comp)], bool)
    if not g_ok.any() or not r_ok.any():
        return {"cov_recall": 0.0 if n_ref else None, "cov_precision": 0.0 if n_gen else None,
                "n_gen": n_gen, "n_ref": n_ref}
    gs = np.stack([gen_struct[i] for i in np.flatnonzero(g_ok)])
    gc = np.stack([gen_comp[i] for i in np.flatnonzero(g_ok)])
    rs = np.stack([ref_struct[i] for i in np.flatnonzero(r_ok)])
    rc = np.stack([ref_comp[i] for i in np.flatnonzero(r_ok)])
    mu, sd = rc.mean(0), rc.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    gc, rc = (gc - mu) / sd, (rc - mu) / sd
    ds = cdist(gs, rs)
    dc = cdist(gc, rc)
    recall_hits = np.logical_and(ds.min(0) <= struct_cutoff, dc.min(0) <= comp_cutoff).sum()
    precision_hits = np.logical_and(ds.min(1) <= struct_cutoff, dc.min(1) <= comp_cutoff).sum()
    return {"cov_recall": float(recall_hits / n_ref), "cov_precision": float(precision_hits / n_gen),
            "n_gen": n_gen, "n_ref": n_ref}


def _basic_stats(structures) -> dict:
    dens, nel, nat = [], [], []
    for s in structures:
        if s is None:
            continue
        try:
            d = float(s.density)
        except Exception:
            continue
        if not np.isfinite(d):
            continue
        dens.append(d)
        nel.append(len(s.composition.elements))
        nat.append(len(s))
    return {"density": np.array(dens), "n_elements": np.array(nel), "n_atoms": np.array(nat)}


def wasserstein_metrics(structures: Sequence, reference: Sequence | dict) -> dict:
    """``{"wdist_density", "wdist_n_elements", "wdist_n_atoms"}`` against reference structures (or their
    precomputed ``_basic_stats``)."""
    from scipy.stats import wasserstein_distance

    a = _basic_stats(structures)
    b = reference if isinstance(reference, dict) else _basic_stats(reference)
    out = {}
    for k in ("density", "n_elements", "n_atoms"):
        out[f"wdist_{k}"] = (float(wasserstein_distance(a[k], b[k])) if len(a[k]) and len(b[k]) else None)
    return out
