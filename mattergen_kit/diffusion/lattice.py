r"""Lattice diffusion: VP SDE toward an atom-count-dependent cubic lattice, MatterGen ref §4.

Schedule (β_min = 0.1, β_max = 20)::

    β(t)  = β_min + t (β_max − β_min)
    α(t)  = exp( −¼ t² (β_max − β_min) − ½ t β_min )               (mean coefficient)
    SDE   dL = −½ β(t) (L − μ_N) dt + sqrt(β(t) v_N) dW

Limit (per crystal with N atoms; ρ = average atomic density, a constructor argument)::

    μ_N = (N / ρ)^{1/3} · I_3        v_N = 0.25 · N^{2/3}   (same variance for all 9 entries)

Symmetric noise (keeps unit variance per entry)::

    Z_sym,ij = (Z_ij + Z_ji)/√2  (i ≠ j),   Z_sym,ii = Z_ii,   Z ~ N(0, I_{3×3})

Marginal and training target ("score × std")::

    mean_t = α L_0 + (1 − α) μ_N,   std_t = sqrt((1 − α²) v_N)
    L_t    = mean_t + std_t Z_sym
    target = −Z_sym = −(L_t − mean_t)/std_t
    loss   = mean over the 9 entries of (pred − target)²  per crystal; field weight 1

Reverse process (ref §6.4, §6.5), s = t + dt (dt < 0); score = network output / std_t::

    predictor (ancestral):  α_{t|s} = clip(α_t/α_s, 0.001, 1),  σ²_{t|s} = σ_t² − σ_s² α_t²/α_s²
        mean   = L/α_{t|s} + σ²_{t|s}/α_{t|s} · score + (1 − 1/α_{t|s}) μ_N
        sample = mean + sqrt(σ²_{t|s}) σ_s/σ_t · Z_sym                 (σ_s := 0 when s ≤ 0)
    corrector (Langevin, snr = 0.2):  α_c = α(t)² / α(t + dt)²
        ‖s‖, ‖z‖ = per-crystal norms over the 9 entries, averaged over the batch
        ε = 2 α_c (snr ‖z‖/‖s‖)²;  mean = L + ε s;  L ← mean + sqrt(2ε) Z_sym
        both re-symmetrised with the polar factor (L Lᵀ)^{1/2}

Deviation: none in the math. ρ defaults to MatterGen's 0.05771451654022283 atoms/Å³ and is a constructor
argument so that the value recomputed from the bundled training set can be used. Times s < 0 at the last
step are clamped to s = 0 (only matters when dt does not land exactly on 0).
"""

from __future__ import annotations

import math

import torch

from mattergen_kit.constants import AVERAGE_DENSITY  # noqa: F401  (atoms / Å³, MatterGen's MP-20 value; re-exported)
from mattergen_kit.data import symmetric_polar_factor
from mattergen_kit.diffusion.coords import langevin_step_size

BETA_MIN = 0.1
BETA_MAX = 20.0
LIMIT_VAR_SCALE = 0.25


def symmetric_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                    device=None, dtype=torch.float32) -> torch.Tensor:
    """Z_sym: (…, 3, 3) symmetric, every entry N(0, 1): (Z + Zᵀ)/√2 off the diagonal, Z_ii on it."""
    z = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    off = (z + z.transpose(-1, -2)) / math.sqrt(2.0)                           # (Z + Zᵀ)/√2
    eye = torch.eye(3, dtype=torch.bool, device=z.device)
    return torch.where(eye, z, off)                                            # diagonal keeps Z_ii


class LatticeVPSDE:
    """VP SDE on (symmetric) 3×3 lattices with limit N(μ_N, v_N) (equations in the module docstring)."""

    def __init__(self, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX,
                 density: float = AVERAGE_DENSITY, limit_var_scale: float = LIMIT_VAR_SCALE):
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.density = density
        self.limit_var_scale = limit_var_scale

    # ------------------------------------------------------------------ schedule
    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α(t) = exp(−¼ t² (β_max − β_min) − ½ t β_min)."""
        t = torch.as_tensor(t, dtype=torch.float32)
        return torch.exp(-0.25 * t.pow(2) * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min)

    def limit_mean(self, num_atoms: torch.Tensor) -> torch.Tensor:
        """μ_N = (N/ρ)^{1/3} I, (B, 3, 3)."""
        edge = (num_atoms.float() / self.density).pow(1.0 / 3.0)
        return edge[:, None, None] * torch.eye(3, device=num_atoms.device)

    def limit_var(self, num_atoms: torch.Tensor) -> torch.Tensor:
        """v_N = 0.25 N^{2/3}, (B,)."""
        return self.limit_var_scale * num_atoms.float().pow(2.0 / 3.0)

    def marginal(self, lattice_0: torch.Tensor, t: torch.Tensor, num_atoms: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean_t (B,3,3), std_t (B,)) of q(L_t | L_0)."""
        a = self.alpha(t).to(lattice_0.device)[:, None, None]
        mean = a * lattice_0 + (1 - a) * self.limit_mean(num_atoms)            # α L_0 + (1 − α) μ_N
        std = torch.sqrt((1 - a[:, 0, 0].pow(2)) * self.limit_var(num_atoms))  # sqrt((1 − α²) v_N)
        return mean, std

    def std(self, t: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        a = self.alpha(t).to(num_atoms.device)
        return torch.sqrt((1 - a.pow(2)) * self.limit_var(num_atoms))

    # ------------------------------------------------------------------ forward
    def sample_marginal(self, lattice_0: torch.Tensor, t: torch.Tensor, num_atoms: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """L_t = mean_t + std_t Z_sym; returns (L_t, Z_sym)."""
        mean, std = self.marginal(lattice_0, t, num_atoms)
        z = symmetric_noise(lattice_0.shape, generator, lattice_0.device, lattice_0.dtype)
        return mean + std[:, None, None] * z, z

    def sample_prior(self, num_atoms: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """L_1 = μ_N + sqrt(v_N) Z_sym."""
        z = symmetric_noise((num_atoms.shape[0], 3, 3), generator, num_atoms.device)
        return self.limit_mean(num_atoms) + self.limit_var(num_atoms).sqrt()[:, None, None] * z

    @staticmethod
    def target(noise: torch.Tensor) -> torch.Tensor:
        """Training target −Z_sym (= std_t · score)."""
        return -noise

    @staticmethod
    def loss_per_crystal(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """mean over the 9 entries of (pred − target)² → (B,)."""
        return (pred - target).pow(2).flatten(1).mean(-1)

    # ------------------------------------------------------------------ reverse
    def predictor_step(self, lattice: torch.Tensor, score: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                       num_atoms: torch.Tensor, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral VP step t → s (per crystal t, s: (B,)). Returns (sample, mean)."""
        s_pos = s.clamp_min(0.0)
        a_t, a_s = self.alpha(t)[:, None, None], self.alpha(s_pos)[:, None, None]
        v = self.limit_var(num_atoms)[:, None, None]
        var_t = (1 - a_t.pow(2)) * v                                            # σ_t²
        var_s = torch.where(s[:, None, None] > 0, (1 - a_s.pow(2)) * v, torch.zeros_like(v))  # σ_s² (0 if s ≤ 0)
        a_ts = (a_t / a_s).clamp(0.001, 1.0)                                    # α_{t|s}
        var_ts = (var_t - var_s * a_t.pow(2) / a_s.pow(2)).clamp_min(0.0)       # σ²_{t|s}
        x_coeff = 1.0 / a_ts
        score_coeff = var_ts / a_ts
        mean = x_coeff * lattice + score_coeff * score + (1 - x_coeff) * self.limit_mean(num_atoms)
        noise_std = var_ts.sqrt() * var_s.sqrt() / var_t.sqrt()                 # sqrt(σ²_{t|s}) σ_s/σ_t
        z = symmetric_noise(lattice.shape, generator, lattice.device, lattice.dtype)
        return mean + noise_std * z, mean

    def corrector_step(self, lattice: torch.Tensor, score: torch.Tensor, t: torch.Tensor, dt: float,
                       snr: float = 0.2, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Langevin step with α_c = α(t)²/α(t+dt)², then polar re-symmetrisation. Returns (sample, mean)."""
        B = lattice.shape[0]
        z = symmetric_noise(lattice.shape, generator, lattice.device, lattice.dtype)
        t0 = t[0] if t.ndim else t
        alpha_c = self.alpha(t0).pow(2) / self.alpha((t0 + dt).clamp_min(0.0)).pow(2)  # α(t)²/α(t+dt)²
        step = langevin_step_size(score, z, torch.arange(B, device=lattice.device), B, snr, alpha_c)
        mean = lattice + step * score                                           # L + ε s
        sample = mean + torch.sqrt(2 * step) * z                                # + sqrt(2ε) Z_sym
        return symmetric_polar_factor(sample), symmetric_polar_factor(mean)
