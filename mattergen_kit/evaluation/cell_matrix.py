"""Matrix logarithm, exponential and the exponential's Fréchet derivative for 3×3 cell deformations, fast.

ASE's ``FrechetCellFilter`` (the cell degrees of freedom of every relaxation here) works in the matrix logarithm of
the deformation gradient F = L₀⁻¹ L: at every FIRE step it takes ``scipy.linalg.logm(F)`` twice, ``expm`` once and
``expm_frechet(log F, E)`` for the nine unit directions E. SciPy's general algorithms (inverse scaling and squaring
with a 1-norm estimator; Padé approximants) cost ~1.7 ms per ``logm`` on a 3×3 matrix, 14 % of a batched relaxation
step here. A deformation gradient is, apart from measure-zero cases, diagonalisable, F = V diag(λ) V⁻¹, and then
every primary matrix function follows from the eigenvalues:

    log F = V diag(log λ) V⁻¹,          exp A = V diag(e^μ) V⁻¹          (A = V diag(μ) V⁻¹)

and the Fréchet derivative of exp at A in direction E (Daleckiĭ–Kreĭn),

    L_exp(A, E) = V [Φ ∘ (V⁻¹ E V)] V⁻¹,
    Φ_ij = (e^μi − e^μj) / (μi − μj) = e^μj · expm1(μi − μj) / (μi − μj),    Φ_ii = e^μi.

Each is a 3×3 eigendecomposition and a few products (~30 µs). The formulas lose accuracy as V becomes
ill-conditioned (nearly defective F, e.g. a pure simple shear), so a V with condition number above 10⁶, or a real
negative eigenvalue of F (no real logarithm), falls back to SciPy: the results agree with SciPy's to ~1e-12
(``tests/test_cell_matrix.py``), so a relaxation's trajectory is unchanged up to round-off.
"""

from __future__ import annotations

import numpy as np

__all__ = ["logm3", "expm3", "expm_frechet3", "install"]

MAX_CONDITION = 1e6


def _eig(a: np.ndarray):
    """``(eigenvalues, V, V⁻¹)`` of a 3×3 matrix, or None when V is too ill-conditioned to use."""
    if not np.all(np.isfinite(a)):
        return None
    w, v = np.linalg.eig(a)
    if np.linalg.cond(v) > MAX_CONDITION:
        return None
    return w, v, np.linalg.inv(v)


def logm3(f: np.ndarray) -> np.ndarray:
    """log F of a real 3×3 matrix (real result), as ``scipy.linalg.logm`` gives it."""
    d = _eig(f)
    if d is None or np.any((np.abs(d[0].imag) < 1e-12) & (d[0].real <= 0)):
        from scipy.linalg import logm

        return logm(f)
    w, v, vinv = d
    return ((v * np.log(w.astype(complex))) @ vinv).real


def expm3(a: np.ndarray) -> np.ndarray:
    """exp A of a real 3×3 matrix, as ``scipy.linalg.expm`` gives it."""
    d = _eig(a)
    if d is None:
        from scipy.linalg import expm

        return expm(a)
    w, v, vinv = d
    return ((v * np.exp(w)) @ vinv).real


class _FrechetCache:
    """``expm_frechet(A, E, compute_expm=False)`` for one A and many E (ASE asks for nine directions at one A)."""

    def __init__(self):
        self.key = None
        self.parts = None

    def __call__(self, a: np.ndarray, e: np.ndarray, compute_expm: bool = True, **kwargs):
        key = a.tobytes()
        if key != self.key:
            d = None if np.iscomplexobj(a) else _eig(a)
            if d is None:
                self.key, self.parts = key, None
            else:
                mu, v, vinv = d
                diff = mu[:, None] - mu[None, :]                          # μi − μj
                exp_mu = np.exp(mu)
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = np.where(diff == 0, 1.0, np.expm1(diff) / np.where(diff == 0, 1.0, diff))
                phi = exp_mu[None, :] * ratio                  # Φ_ij = e^μj expm1(μi − μj)/(μi − μj)
                self.key, self.parts = key, (phi, v, vinv, ((v * exp_mu) @ vinv).real)
        if self.parts is None:
            from scipy.linalg import expm_frechet

            return expm_frechet(a, e, compute_expm=compute_expm, **kwargs)
        phi, v, vinv, exp_a = self.parts
        deriv = (v @ (phi * (vinv @ e @ v)) @ vinv).real
        return (exp_a, deriv) if compute_expm else deriv


def expm_frechet3(a: np.ndarray, e: np.ndarray, compute_expm: bool = True, **kwargs):
    """The Fréchet derivative of exp at A in direction E (and exp A with ``compute_expm``), as
    ``scipy.linalg.expm_frechet`` gives it."""
    return _FrechetCache()(a, e, compute_expm=compute_expm, **kwargs)


def install(cell_filter) -> None:
    """Make an ASE ``FrechetCellFilter`` use these functions instead of SciPy's (same numbers up to round-off)."""
    utility = getattr(cell_filter, "_utility", None)
    for owner in (cell_filter, utility):
        if owner is None:
            continue
        if hasattr(owner, "logm"):
            owner.logm = logm3
        if hasattr(owner, "expm"):
            owner.expm = expm3
        if hasattr(owner, "expm_frechet"):
            owner.expm_frechet = _FrechetCache()
