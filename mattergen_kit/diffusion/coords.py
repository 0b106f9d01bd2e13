r"""Fractional-coordinate diffusion: wrapped VE SDE on the unit 3-torus, MatterGen ref §3.

Forward process (per crystal with N atoms; σ_min = 0.01, σ_max = 5)::

    σ(t; N) = σ_min (σ_max/σ_min)^t · N^{−1/3}                     (atom-count adjusted VE std)
    f_t     = wrap(f_0 + σ(t; N) ε),   ε ~ N(0, I_3),   wrap(x) = x mod 1
    prior   f_1 = wrap(σ_max N^{−1/3} ε)

Wrapped-normal score (training target is "score × std")::

    Δ      = f_t − f_0                                             (per atom, (3,))
    w_k    = softmax_k( −‖Δ + k‖² / 2σ² ),  k ∈ {−3..3}³           (7³ = 343 images)
    score  = −Σ_k w_k (Δ + k) / σ²
    target = σ · score                                             (= −ε when no image competes)

Because the isotropic Gaussian factorises over x, y, z and the image set {−3..3}³ is a product set, the
343-image sum equals a product of three 7-image sums, so the score is computed per component from 7
images — identical to the 343-image formula, not an approximation (checked in the tests).

Loss per crystal: Σ_atoms mean_xyz (pred − target)², averaged over crystals by the caller; field weight
0.1 (applied in :mod:`mattergen_kit.diffusion.joint`).

Reverse process (ref §6.4, §6.5), s = t + dt (dt < 0), σ_s := 0 when s ≤ 0::

    predictor (ancestral, VE: α ≡ 1):
        mean   = f + (σ_t² − σ_s²) · score
        sample = mean + sqrt(σ_t² − σ_s²) · σ_s/σ_t · z                       then wrap both
    corrector (Langevin, snr = 0.4):
        ‖s‖, ‖z‖ = per-crystal L2 norms over (atoms × 3), then averaged over the batch (one scalar each)
        ε      = 2 (snr ‖z‖ / ‖s‖)²      (clipped at 1e6; 1e6 if ‖s‖ = 0)
        mean   = f + ε s;   f ← mean + sqrt(2ε) z                                then wrap both
with score = network output / σ(t; N).

Deviation from the reference (one, deliberate): Δ is wrapped into [−½, ½) before the image sum. The
exact wrapped-normal score is periodic in Δ, but its 7-image truncation evaluated at the raw Δ ∈ (−1, 1)
is not: a periodic translation of a crystal changes Δ by ±1 for atoms crossing the cell boundary, and at
σ ≳ 1 (t → 1, small N) the reference target then changes by up to ~0.2 (σ·score units). Wrapping Δ first
makes the target exactly periodic (the loss is invariant to the choice of cell origin) and halves the
truncation error; where the truncation is negligible (σ ≲ 0.7, i.e. almost all of training) the two are
identical to float precision.
"""

from __future__ import annotations

import math

import torch

SIGMA_MIN = 0.01
SIGMA_MAX = 5.0
MAX_IMAGE = 3
MAX_STEP_SIZE = 1e6


def wrap(x: torch.Tensor) -> torch.Tensor:
    """x mod 1 into [0, 1) (torch.remainder; a float32 value that rounds to 1.0 is folded to 0)."""
    y = torch.remainder(x, 1.0)
    return torch.where(y >= 1.0, y - 1.0, y)


def wrapped_normal_score(x_t: torch.Tensor, x_0: torch.Tensor, sigma: torch.Tensor,
                         max_image: int = MAX_IMAGE) -> torch.Tensor:
    """Score ∇_{x_t} log WN(x_t; x_0, σ²) from the images k ∈ {−max_image..max_image}³.

    x_t, x_0: (n, 3); sigma: (n,) or (n, 1). Computed in float64, returned in x_t's dtype.
    """
    sigma = torch.as_tensor(sigma, device=x_t.device).double().reshape(-1, 1, 1)
    delta = (x_t.double() - x_0.double())
    delta = delta - torch.floor(delta + 0.5)                                  # wrap Δ into [−½, ½) (see doc)
    k = torch.arange(-max_image, max_image + 1, device=x_t.device, dtype=torch.float64)
    d = delta[..., None] + k                                                  # Δ + k per component, (n, 3, 7)
    w = torch.softmax(-d.pow(2) / (2 * sigma.pow(2)), dim=-1)                 # w_k
    score = -(w * d).sum(-1) / sigma[..., 0].pow(2)                           # −Σ w_k (Δ + k) / σ²
    return score.to(x_t.dtype)


class WrappedVESDE:
    """Atom-count-adjusted wrapped VE SDE on [0, 1)³ (equations in the module docstring)."""

    def __init__(self, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, max_image: int = MAX_IMAGE):
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.max_image = max_image

    # ------------------------------------------------------------------ schedule
    def sigma(self, t: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """σ(t; N) = σ_min (σ_max/σ_min)^t N^{−1/3}, per crystal (B,)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        base = self.sigma_min * (self.sigma_max / self.sigma_min) ** t                 # σ_VE(t)
        return base * num_atoms.to(base.dtype).pow(-1.0 / 3.0)                          # · N^{−1/3}

    def diffusion_coeff(self, t: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        """g(t) = σ(t; N) sqrt(2 ln(σ_max/σ_min)) (SDE form; not needed by the samplers)."""
        return self.sigma(t, num_atoms) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    # ------------------------------------------------------------------ forward
    def sample_marginal(self, x_0: torch.Tensor, sigma_atom: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """f_t = wrap(f_0 + σ ε); returns (f_t, ε). sigma_atom: (ΣN,) σ of each atom's crystal."""
        eps = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        return wrap(x_0 + sigma_atom[:, None] * eps), eps

    def sample_prior(self, num_atoms: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """f_1 = wrap(σ_max N^{−1/3} ε), (ΣN, 3)."""
        sigma_atom = self.sigma(torch.ones(()), num_atoms).repeat_interleave(num_atoms)
        eps = torch.randn((int(num_atoms.sum()), 3), generator=generator, device=num_atoms.device)
        return wrap(sigma_atom[:, None] * eps)

    def target(self, x_t: torch.Tensor, x_0: torch.Tensor, sigma_atom: torch.Tensor) -> torch.Tensor:
        """Training target σ · score of the wrapped normal (ΣN, 3)."""
        return sigma_atom[:, None] * wrapped_normal_score(x_t, x_0, sigma_atom, self.max_image)

    @staticmethod
    def loss_per_crystal(pred: torch.Tensor, target: torch.Tensor, batch_idx: torch.Tensor,
                         num_crystals: int) -> torch.Tensor:
        """Σ_atoms mean_xyz (pred − target)² → (B,)."""
        per_atom = (pred - target).pow(2).mean(-1)
        return torch.zeros(num_crystals, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, batch_idx, per_atom)

    # ------------------------------------------------------------------ reverse
    def predictor_step(self, x: torch.Tensor, score: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral VE step t → s. sigma_t, sigma_s: (ΣN,) per atom (σ_s = 0 when s ≤ 0).

        Returns (wrapped sample, wrapped mean).
        """
        var_ts = (sigma_t.pow(2) - sigma_s.pow(2))[:, None]                   # σ²_{t|s} = σ_t² − σ_s²
        mean = x + var_ts * score                                             # x + σ²_{t|s} score
        noise_std = var_ts.clamp_min(0).sqrt() * (sigma_s / sigma_t)[:, None]  # sqrt(σ²_{t|s}) σ_s/σ_t
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return wrap(mean + noise_std * z), wrap(mean)

    @staticmethod
    def corrector_step(x: torch.Tensor, score: torch.Tensor, batch_idx: torch.Tensor, num_crystals: int,
                       snr: float = 0.4, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Langevin corrector (α_c = 1 for VE). Returns (wrapped sample, wrapped mean)."""
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        step = langevin_step_size(score, z, batch_idx, num_crystals, snr, alpha=1.0)
        mean = x + step * score                                               # x + ε s
        sample = mean + torch.sqrt(2 * step) * z                              # + sqrt(2ε) z
        return wrap(sample), wrap(mean)


def langevin_step_size(score: torch.Tensor, noise: torch.Tensor, group_idx: torch.Tensor, num_groups: int,
                       snr: float, alpha: float | torch.Tensor = 1.0) -> torch.Tensor:
    """ε = 2 α (snr ‖z‖/‖s‖)² with per-crystal L2 norms averaged over the batch (ref §6.5).

    score, noise: (n, ...) rows grouped into crystals by ``group_idx`` (n,). Returns a 0-d tensor,
    clipped at 1e6 (1e6 when ‖s‖ = 0).
    """
    def mean_norm(v: torch.Tensor) -> torch.Tensor:
        sq = v.reshape(v.shape[0], -1).double().pow(2).sum(-1)
        per_group = torch.zeros(num_groups, dtype=sq.dtype, device=sq.device).index_add_(0, group_idx, sq)
        return per_group.sqrt().mean()                                        # mean_i ‖v_i‖

    s_norm, z_norm = mean_norm(score), mean_norm(noise)
    alpha = torch.as_tensor(alpha, dtype=torch.float64, device=score.device)
    if float(s_norm) == 0.0:
        step = torch.as_tensor(MAX_STEP_SIZE, dtype=torch.float64, device=score.device)
    else:
        step = (2 * alpha * (snr * z_norm / s_norm).pow(2)).clamp(max=MAX_STEP_SIZE)
    return step.to(score.dtype)
