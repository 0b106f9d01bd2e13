"""The 3×3 matrix functions the batched relaxation gives ASE's FrechetCellFilter agree with SciPy's, and a cell
relaxation that uses them follows the same trajectory."""

import numpy as np
import pytest
from scipy.linalg import expm, expm_frechet, logm

from mattergen_kit.evaluation import cell_matrix
from mattergen_kit.evaluation.cell_matrix import _FrechetCache, expm3, logm3


def _deformations(seed=0, n=300):
    """Deformation gradients a relaxation meets: identity, isotropic scaling, anisotropic strain and shear, and
    random F = I + X with |X| from 1e-6 to 0.3 (a cell changed by up to ~30 %), all with positive eigenvalues."""
    rng = np.random.default_rng(seed)
    out = [np.eye(3), 1.03 * np.eye(3), np.diag([1.1, 0.9, 1.0])]
    while len(out) < n:
        f = np.eye(3) + rng.normal(0, rng.choice([1e-6, 1e-3, 0.05, 0.15]), (3, 3))
        w = np.linalg.eigvals(f)
        if not np.any((np.abs(w.imag) < 1e-12) & (w.real <= 0)):
            out.append(f)
    return out


def test_log_exp_and_frechet_derivative_match_scipy():
    units = [np.eye(3)[[i]].T @ np.eye(3)[[j]] for i in range(3) for j in range(3)]   # E_ij, ASE's nine directions
    worst = np.zeros(3)
    for f in _deformations():
        log_f = logm(f)
        worst[0] = max(worst[0], np.abs(logm3(f) - log_f).max())
        worst[1] = max(worst[1], np.abs(expm3(log_f) - expm(log_f)).max())
        frechet = _FrechetCache()
        for e in units:
            worst[2] = max(worst[2], np.abs(frechet(log_f, e, compute_expm=False)
                                            - expm_frechet(log_f, e, compute_expm=False)).max())
        exp_a, deriv = frechet(log_f, units[1])
        np.testing.assert_allclose(exp_a, f, atol=1e-12)          # exp(log F) = F
    assert worst.max() < 1e-11, worst


def test_defective_shear_falls_back_to_scipy():
    """A pure simple shear is not diagonalisable; the eigendecomposition would be useless, SciPy takes over."""
    shear = np.array([[1.0, 0.02, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert cell_matrix._eig(shear) is None
    np.testing.assert_allclose(logm3(shear), logm(shear), atol=1e-14)
    e = np.zeros((3, 3))
    e[2, 0] = 1.0
    np.testing.assert_allclose(_FrechetCache()(logm(shear), e, compute_expm=False),
                               expm_frechet(logm(shear), e, compute_expm=False), atol=1e-14)


def test_frechet_cell_filter_relaxation_follows_the_same_trajectory():
    """FIRE on a FrechetCellFilter of a strained, rattled Cu supercell (pymatgen-built, ASE's EMT potential):
    with and without :func:`cell_matrix.install` the positions, cells and energies agree at every step."""
    from ase.calculators.emt import EMT
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.61), ["Cu"], [[0, 0, 0]])
    cu.make_supercell([2, 1, 1])
    cu.apply_strain([0.04, -0.03, 0.02])
    cu.lattice = Lattice(cu.lattice.matrix + np.array([[0, 0.15, 0], [0, 0, 0], [0.1, 0, 0]]))   # shear it too
    cu.perturb(0.08, min_distance=0.02)

    def trajectory(fast: bool):
        atoms = AseAtomsAdaptor.get_atoms(cu)
        atoms.calc = EMT()
        filt = FrechetCellFilter(atoms)
        if fast:
            cell_matrix.install(filt)
        opt = FIRE(filt, logfile=None)
        states = []
        for _ in opt.irun(fmax=1e-3, steps=60):
            states.append((atoms.get_positions().copy(), atoms.cell.array.copy(), atoms.get_potential_energy()))
        return states

    slow, fast = trajectory(False), trajectory(True)
    assert len(slow) == len(fast) > 20
    assert slow[-1][2] < slow[0][2] - 0.05                       # it did relax
    for (p0, c0, e0), (p1, c1, e1) in zip(slow, fast):
        np.testing.assert_allclose(p1, p0, atol=1e-9)
        np.testing.assert_allclose(c1, c0, atol=1e-9)
        assert e1 == pytest.approx(e0, abs=1e-9)
