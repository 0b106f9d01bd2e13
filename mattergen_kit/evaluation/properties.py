"""Per-structure properties: HHI, space group, and a band-gap predictor trained on the bundled data.

* **HHI** (Herfindahl–Hirschman index of production / reserves, Gaultois et al. 2013; pymatgen ``HHIModel``):
  ``HHI(compound) = Σ_i w_i · HHI_i`` with ``w_i`` the weight fraction of element i (pymatgen's weighting);
  < ~1,500 is "low supply risk" (ref §12.1).
* **Space group**: ``SpacegroupAnalyzer(symprec=0.1, angle_tolerance=5)`` (spglib), MatterGen's reporting setting.
* **Band gap**: Magpie composition features (matminer ``ElementProperty``) → scikit-learn
  ``HistGradientBoostingRegressor`` trained on the bundled **train** split's DFT band gaps (eV), test MAE on the
  bundled **test** split. Fitted once per process from features cached (as .npz) in ``datasets/cache/evaluation/``. It sees composition only, so
  it cannot tell polymorphs apart: use it to compare distributions, not to screen single crystals.
"""

from __future__ import annotations

import json
import warnings
from typing import Sequence

import numpy as np

__all__ = ["hhi", "spacegroup", "BandGapPredictor", "band_gap_predictor"]


def hhi(composition) -> tuple[float | None, float | None]:
    """``(hhi_production, hhi_reserve)`` (pymatgen HHIModel; None when an element has no data)."""
    from pymatgen.analysis.hhi import HHIModel

    try:
        return HHIModel().get_hhi(composition)
    except Exception:
        return None, None


def spacegroup(structure, symprec: float = 0.1, angle_tolerance: float = 5.0) -> tuple[int | None, str | None]:
    """``(number, symbol)`` of the space group, or ``(None, None)`` if spglib fails."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
            return int(sga.get_space_group_number()), str(sga.get_space_group_symbol())
    except Exception:
        return None, None


def _features(compositions: Sequence) -> np.ndarray:
    from mattergen_kit.evaluation.distribution import composition_fingerprint

    rows = []
    for c in compositions:
        v = composition_fingerprint(c)
        rows.append(v if v is not None else np.full(132, np.nan))
    return np.stack(rows) if rows else np.zeros((0, 132))


class BandGapPredictor:
    """Composition → band gap (eV). ``metrics`` holds the held-out test MAE (and a predict-the-mean baseline)."""

    def __init__(self, model, metrics: dict):
        self.model = model
        self.metrics = metrics

    @classmethod
    def train(cls, seed: int = 0, progress: bool = True) -> "BandGapPredictor":
        from sklearn.ensemble import HistGradientBoostingRegressor

        Xtr, ytr, Xte, yte = _training_data()
        ok = np.isfinite(ytr)
        model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.06, random_state=seed)
        model.fit(Xtr[ok], np.clip(ytr[ok], 0, None))
        okt = np.isfinite(yte)
        pred = np.clip(model.predict(Xte[okt]), 0, None)
        metrics = {"test_mae_eV": float(np.mean(np.abs(pred - yte[okt]))),
                   "baseline_mae_eV": float(np.mean(np.abs(np.mean(ytr[ok]) - yte[okt]))),
                   "n_train": int(ok.sum()), "n_test": int(okt.sum()),
                   "features": "matminer magpie ElementProperty", "model": "HistGradientBoostingRegressor"}
        return cls(model, metrics)

    def predict(self, compositions: Sequence) -> np.ndarray:
        X = _features(compositions)
        if len(X) == 0:
            return np.zeros(0)
        return np.clip(self.model.predict(X), 0, None)


def _training_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Magpie features and DFT band gaps of the bundled train and test splits, cached as .npz (no pickle)."""
    from mattergen_kit.evaluation.cache import building, load_arrays, save_arrays
    from mattergen_kit.evaluation.reference import bundled, cache_dir

    tr, te = bundled("train"), bundled("test")
    path = cache_dir() / f"bandgap-features-{len(tr)}-{len(te)}.npz"
    z = load_arrays(path)
    if z is None:
        with building(f"band-gap training features ({len(tr) + len(te)} compositions)", path):
            z = {"Xtr": _features([s.composition for s in tr.structures]),
                 "ytr": tr.properties["band_gap"].to_numpy(float),
                 "Xte": _features([s.composition for s in te.structures]),
                 "yte": te.properties["band_gap"].to_numpy(float)}
            save_arrays(path, **z)
    return z["Xtr"], z["ytr"], z["Xte"], z["yte"]


_PREDICTOR: BandGapPredictor | None = None


def band_gap_predictor(retrain: bool = False) -> BandGapPredictor:
    """The band-gap predictor of this process (fitted on first use from cached features, ~10 s on one core).

    The fitted model is not stored: scikit-learn models can only be saved by pickling, and no cache of this
    project is unpickled (evaluation/cache.py). The features are cached as .npz; the fit is deterministic.
    """
    global _PREDICTOR
    if _PREDICTOR is not None and not retrain:
        return _PREDICTOR
    from threadpoolctl import threadpool_limits

    from mattergen_kit.evaluation.reference import cache_dir

    with threadpool_limits(limits=1):  # OpenMP on a shared CPU: 8 s with one thread, ~5 min with two busy ones
        _PREDICTOR = BandGapPredictor.train()
    (cache_dir() / "bandgap-metrics.json").write_text(json.dumps(_PREDICTOR.metrics, indent=1))
    return _PREDICTOR
