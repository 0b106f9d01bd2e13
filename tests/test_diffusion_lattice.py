"""Lattice VP SDE: schedule constants, symmetric noise, forward marginal, ancestral predictor, corrector."""
import math

import pytest
import torch

from mattergen_kit.diffusion.lattice import AVERAGE_DENSITY, LatticeVPSDE, symmetric_noise


def test_schedule_constants():
    sde = LatticeVPSDE()
    assert math.isclose(float(sde.alpha(torch.tensor(1.0))), 0.006572, rel_tol=1e-3)
    assert math.isclose(float(sde.alpha(torch.tensor(0.5))), 0.2812, rel_tol=1e-3)
    mu = sde.limit_mean(torch.tensor([8, 20]))
    assert math.isclose(float(mu[0, 0, 0]), 5.175, rel_tol=1e-3) and math.isclose(float(mu[1, 2, 2]), 7.024, rel_tol=1e-3)
    assert float(mu[0, 0, 1]) == 0.0
    torch.testing.assert_close(sde.limit_var(torch.tensor([8])), torch.tensor([1.0]))
    # ρ is configurable
    mu2 = LatticeVPSDE(density=AVERAGE_DENSITY / 2).limit_mean(torch.tensor([8]))
    assert math.isclose(float(mu2[0, 0, 0]), 5.175 * 2 ** (1 / 3), rel_tol=1e-3)


def test_symmetric_noise_unit_variance():
    z = symmetric_noise((200_000, 3, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, z.transpose(1, 2))
    var = z.var(0)
    torch.testing.assert_close(var, torch.ones(3, 3), atol=0.02, rtol=0)
    assert abs(float(torch.corrcoef(torch.stack([z[:, 0, 0], z[:, 1, 1]]))[0, 1])) < 0.02


@pytest.mark.parametrize("t", [0.01, 0.3, 0.6, 1.0])
def test_forward_marginal_statistics(t):
    sde = LatticeVPSDE()
    n, N = 100_000, 8
    L0 = torch.tensor([[5.6, 0.3, 0.0], [0.3, 6.1, -0.2], [0.0, -0.2, 4.9]])
    g = torch.Generator().manual_seed(1)
    Lt, z = sde.sample_marginal(L0.expand(n, 3, 3), torch.full((n,), t), torch.full((n,), N), g)
    torch.testing.assert_close(Lt, Lt.transpose(1, 2))
    a = math.exp(-0.25 * t ** 2 * 19.9 - 0.05 * t)
    mu = (N / AVERAGE_DENSITY) ** (1 / 3) * torch.eye(3)
    mean = a * L0 + (1 - a) * mu
    var = (1 - a ** 2) * 0.25 * N ** (2 / 3)
    torch.testing.assert_close(Lt.mean(0), mean, atol=4 * math.sqrt(var / n) + 1e-6, rtol=0)
    torch.testing.assert_close(Lt.var(0) / var, torch.ones(3, 3), atol=0.03, rtol=0)
    # target = −Z_sym = −(L_t − mean_t)/std_t
    m_t, std = sde.marginal(L0.expand(n, 3, 3), torch.full((n,), t), torch.full((n,), N))
    torch.testing.assert_close(sde.target(z), -(Lt - m_t) / std[:, None, None], atol=1e-3, rtol=1e-3)


def test_prior():
    sde = LatticeVPSDE()
    L = sde.sample_prior(torch.full((50_000,), 20), torch.Generator().manual_seed(2))
    torch.testing.assert_close(L.mean(0), sde.limit_mean(torch.tensor([20]))[0], atol=0.03, rtol=0)
    torch.testing.assert_close(L.var(0), torch.full((3, 3), 0.25 * 20 ** (2 / 3)), rtol=0.03, atol=0)


@pytest.mark.parametrize("t,s", [(0.9, 0.85), (0.5, 0.3), (0.05, 0.04)])
def test_predictor_reproduces_marginal_for_point_mass(t, s):
    """With the exact score of a point mass L0, one ancestral step maps q_t(L) onto q_s(L) exactly."""
    sde = LatticeVPSDE()
    n, N = 100_000, 8
    L0 = torch.tensor([[5.6, 0.3, 0.0], [0.3, 6.1, -0.2], [0.0, -0.2, 4.9]]).expand(n, 3, 3)
    Nv, tv, sv = torch.full((n,), N), torch.full((n,), t), torch.full((n,), s)
    g = torch.Generator().manual_seed(3)
    Lt, _ = sde.sample_marginal(L0, tv, Nv, g)
    m_t, std_t = sde.marginal(L0, tv, Nv)
    score = -(Lt - m_t) / std_t[:, None, None] ** 2
    sample, _ = sde.predictor_step(Lt, score, tv, sv, Nv, g)
    m_s, std_s = sde.marginal(L0, sv, Nv)
    torch.testing.assert_close(sample.mean(0), m_s[0], atol=4 * float(std_s[0]) / math.sqrt(n) + 1e-5, rtol=0)
    torch.testing.assert_close(sample.var(0) / std_s[0] ** 2, torch.ones(3, 3), atol=0.03, rtol=0)
    # s ≤ 0: the mean is exactly L0 (Tweedie for a point mass)
    _, mean0 = sde.predictor_step(Lt[:100], score[:100], tv[:100], torch.full((100,), -1e-4), Nv[:100], g)
    torch.testing.assert_close(mean0, L0[:100], atol=2e-3, rtol=0)


def test_corrector_keeps_stationary_gaussian_and_symmetry():
    """Langevin steps with the exact score of N(m, σ²) leave that distribution (approximately) invariant."""
    sde = LatticeVPSDE()
    n, N, t, dt = 4_000, 8, 0.5, -1e-3
    L0 = torch.tensor([[5.6, 0.3, 0.0], [0.3, 6.1, -0.2], [0.0, -0.2, 4.9]]).expand(n, 3, 3)
    tv, Nv = torch.full((n,), t), torch.full((n,), N)
    g = torch.Generator().manual_seed(4)
    L, _ = sde.sample_marginal(L0, tv, Nv, g)
    m_t, std_t = sde.marginal(L0, tv, Nv)
    for _ in range(5):
        score = -(L - m_t) / std_t[:, None, None] ** 2
        L, mean = sde.corrector_step(L, score, tv, dt, snr=0.2, generator=g)
        torch.testing.assert_close(L, L.transpose(1, 2))
    torch.testing.assert_close(L.mean(0), m_t[0], atol=0.05, rtol=0)
    torch.testing.assert_close(L.var(0) / std_t[0] ** 2, torch.ones(3, 3), atol=0.1, rtol=0)
