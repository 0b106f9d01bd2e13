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

from mattergen_kit.data.precomputed import find_precomputed
from mattergen_kit.evaluation.cache import building, load_arrays, save_arrays
from mattergen_kit.evaluation.distribution import composition_fingerprint
from mattergen_kit.evaluation.reference import bundled, cache_dir

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


class ShippedTrees:
    """A fitted ``HistGradientBoostingRegressor`` (squared error) as plain arrays, predicting without scikit-learn.

    ``f(x) = b + Σ_t v_t(leaf_t(x))``: from the root of each tree t, go left when ``x[feature] ≤ threshold`` (a NaN
    feature goes left iff ``missing_go_to_left``), right otherwise, until a leaf; ``b`` is the baseline (the mean of
    the training targets). This is exactly scikit-learn's ``TreePredictor`` on numeric features, so predictions
    agree with the fitted model (checked when the file is written, :func:`export_trees`).
    Stored as an ``.npz`` (no pickle): node fields concatenated over trees, ``offsets[t]`` = first node of tree t.
    """

    FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")

    def __init__(self, arrays: dict):
        self.a = {k: np.asarray(arrays[k]) for k in self.FIELDS + ("offsets", "baseline")}

    @classmethod
    def from_sklearn(cls, model) -> "ShippedTrees":
        nodes = [pred.nodes for (pred,) in model._predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise ValueError("categorical splits are not supported")
        cat = np.concatenate(nodes)
        arrays = {k: cat[k] for k in cls.FIELDS}
        arrays["offsets"] = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        arrays["baseline"] = np.asarray(model._baseline_prediction, float).reshape(-1)[:1]
        return cls(arrays)

    def predict(self, X: np.ndarray) -> np.ndarray:
        a = self.a
        X = np.asarray(X, float)
        rows = np.arange(len(X))
        out = np.full(len(X), float(a["baseline"][0]))
        leaf, feat, thr, miss = a["is_leaf"].astype(bool), a["feature_idx"], a["num_threshold"], a["missing_go_to_left"]
        for off in a["offsets"]:
            node = np.full(len(X), off, np.int64)
            active = ~leaf[node]
            while active.any():
                nd = node[active]
                x = X[rows[active], feat[nd]]
                go_left = np.where(np.isnan(x), miss[nd].astype(bool), x <= thr[nd])
                node[active] = off + np.where(go_left, a["left"][nd], a["right"][nd])
                active = ~leaf[node]
            out += a["value"][node]
        return out

    def save(self, path, metrics: dict) -> None:
        save_arrays(path, metrics=np.array(json.dumps(metrics)), **self.a)

    @classmethod
    def load(cls, path) -> tuple["ShippedTrees", dict]:
        with np.load(path, allow_pickle=False) as z:
            return cls({k: z[k] for k in z.files}), json.loads(str(z["metrics"]))


def shipped_model_name(n_train: int, n_test: int) -> str:
    return f"bandgap-hgb-{n_train}-{n_test}.npz"


def export_trees(predictor: BandGapPredictor, path) -> ShippedTrees:
    """Write ``predictor``'s fitted trees to ``path`` after checking they predict what scikit-learn predicts."""

    trees = ShippedTrees.from_sklearn(predictor.model)
    X = _features([s.composition for s in bundled("test").structures])
    diff = np.abs(trees.predict(X) - predictor.model.predict(X)).max()
    if not diff < 1e-9:
        raise AssertionError(f"exported trees disagree with scikit-learn by {diff}")
    trees.save(path, predictor.metrics)
    return trees


_PREDICTOR: BandGapPredictor | None = None


def band_gap_predictor(retrain: bool = False) -> BandGapPredictor:
    """The band-gap predictor of this process (fitted on first use from cached features, ~10 s on one core).

    A fresh clone reads the fitted trees shipped as arrays (:class:`ShippedTrees`, ``datasets/precomputed``), no
    pickle. Without them (other splits, ``retrain=True``) the model is fitted here: scikit-learn models can only be
    saved by pickling, and no cache of this project is unpickled (evaluation/cache.py); the features are cached as
    .npz; the fit is deterministic.
    """
    global _PREDICTOR
    if _PREDICTOR is not None and not retrain:
        return _PREDICTOR
    from threadpoolctl import threadpool_limits

    if not retrain:  # the shipped trees of the model fitted on these splits (mattergen_kit.data.precomputed)

        shipped = find_precomputed(shipped_model_name(len(bundled("train")), len(bundled("test"))))
        if shipped is not None:
            trees, metrics = ShippedTrees.load(shipped)
            _PREDICTOR = BandGapPredictor(trees, dict(metrics, source="shipped precomputed trees"))
            return _PREDICTOR

    with threadpool_limits(limits=1):  # OpenMP on a shared CPU: 8 s with one thread, ~5 min with two busy ones
        _PREDICTOR = BandGapPredictor.train()
    (cache_dir() / "bandgap-metrics.json").write_text(json.dumps(_PREDICTOR.metrics, indent=1))
    return _PREDICTOR
