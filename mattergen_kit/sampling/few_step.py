r"""Few-step sampling pieces for :class:`~mattergen_kit.sampling.PredictorCorrectorSampler` (issue 21).

Time grid (EDM's ρ-schedule, Karras et al. 2022, applied to t ∈ [ε, 1])::

    t_i = ( 1 + i/(n−1) · (ε^{1/ρ} − 1) )^ρ,   i = 0..n−1        (t_0 = 1, t_{n−1} = ε)
    ρ = 1: t_i = linspace(1, ε, n), the reference grid;  ρ > 1: denser at small t (where the fine geometry forms)

The coordinates' σ(t; N) = σ_min (σ_max/σ_min)^t N^{−1/3} is geometric in t, so the reference grid is already
geometric in σ (EDM's ρ → ∞ limit in σ); a ρ > 1 grid in t spends still more of the steps at small σ.

Deterministic (probability-flow) updates of the continuous fields, "data prediction" form (DDIM = DPM-Solver-1;
DPM-Solver++(2M), Lu et al. 2022, for the second order). With x̂_0 the network's Tweedie estimate at t and D the
value used for the step::

    coordinates (VE, α ≡ 1, on the torus):
        x̂_0 = f + σ_t² s(f, t)                              (Tweedie; f unwrapped, the displacement is local)
        f_s = (σ_s/σ_t) f + (1 − σ_s/σ_t) D                  then wrap
    lattice (VP toward μ_N: y = L − μ_N, α_t, σ_t² = (1 − α_t²) v_N):
        ŷ_0 = (y + σ_t² s(L, t)) / α_t                       (Tweedie)
        y_s = (σ_s/σ_t) y + (α_s − α_t σ_s/σ_t) D,  L_s = μ_N + y_s
    first order:  D = x̂_0 (this is DDIM; at s = 0 the step returns D: the final Tweedie denoising step)
    2M:           D = (1 + 1/(2r)) x̂_0(t) − 1/(2r) x̂_0(t_prev),   r = h_prev / h,
                  h = λ_s − λ_t with λ = log(α/σ)  (coordinates: α = 1)
On the torus the difference x̂_0(t) − x̂_0(t_prev) is taken as the shortest periodic displacement (wrapped to
[−½, ½)). The last step (σ_s = 0) is always first order: f_0 = x̂_0, L_0 = μ_N + ŷ_0 — Tweedie's formula.
"""

from __future__ import annotations

import torch

from mattergen_kit.data import symmetric_polar_factor
from mattergen_kit.diffusion.coords import langevin_step_size, wrap
from mattergen_kit.diffusion.lattice import symmetric_noise


#: The few-step sampler (issue 21; benchmarks/bench_few_step.py): 100 steps of the probability-flow DPM-Solver++(2M)
#: predictor; the Langevin corrector twice per step where t ≤ 0.5 and not above (100 + 2·50 = 200 network calls per
#: crystal), its random term at η = 0.7; the network under bf16 autocast where the CPU has it. ``FAST_STEPS`` steps
#: unless a request gives its own (at 50 steps: 50 + 2·25 = 100 calls).
#: Its atom types: atoms revealed in the same step draw their elements one after the other, each seeing the elements
#: drawn before it (``coherence_within_step``, :func:`coherent_reveal_step`; at 100 steps ~9 % of reveals share a step,
#: which the reference draws independently).
#: Measured on 1,000 samples, seed 0, the first 256 relaxed (benchmarks/results/few_step_table256.json), against the
#: 1000-step reference (2,000 calls): SMACT 0.819 (0.813), validity 0.978 (0.983), RMSD to the relaxed cell 0.599 Å
#: (0.600), stability / S.U.N. 0.441 / 0.340 (0.461 / 0.312), W(density) 0.085 (0.119), W(#elements) 0.378 (0.396).
#: Where the correctors go is what moved the geometry: one per step everywhere (the previous default) gave RMSD
#: 0.678 Å on the same draw; two per step at t ≤ 0.5 put them where the fine geometry forms. A second draw (seed 1,
#: benchmarks/results/few_step_seed1.json) is less flattering: RMSD 0.635 vs 0.647 Å, validity 0.976 vs 0.987.
#: Screened without gain (benchmarks/results/few_step_rmsd_screen.json, few_step_types_screen.json): η = 0.6
#: (validity 0.972), 66 steps with two correctors each, type temperature 0.8 / 0.9, confidence-ordered unmasking,
#: β × 1.5, remasking.
FAST_STEPS = 100
FAST_SAMPLER = {"continuous_update": "ode2m", "noise_scale": 0.7, "network_bfloat16": True,
                "coherence_within_step": True, "n_corrector_steps": 2, "corrector_t_max": 0.5}


def fast_bfloat16(device: torch.device | str) -> bool:
    """bfloat16 matrix products pay only where the hardware has them: a CUDA GPU, or a CPU with AVX512-BF16 / AMX
    (2.5x per call measured on such a CPU). Elsewhere (AVX2 laptops) torch emulates them and they are slower than
    float32, so the fast sampler stays in float32 there."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


#: The few-step sampler of a steered request (guided conditions, or Wyckoff templates): the corrector's random term at
#: full size (η = 1). At η = 0.7 guidance steered less and lost validity (band gap 2 eV at γ = 2, 256 samples, seed 0,
#: 100 steps: median 1.79 eV and validity 0.957, against 2.20 eV and 0.988 with the reference sampler at the same
#: steps; η = 1: 1.95 eV and 0.988; benchmarks/results/conditioning/fast_sampler/).
FAST_SAMPLER_STEERED = {**FAST_SAMPLER, "noise_scale": 1.0}


def fast_sampler_options(device: torch.device | str, steered: bool = False) -> dict:
    """The few-step sampler's options for a model on ``device`` (bfloat16 where it is fast: :func:`fast_bfloat16`):
    FAST_SAMPLER, or FAST_SAMPLER_STEERED for a ``steered`` request (guided conditions or templates)."""
    return {**(FAST_SAMPLER_STEERED if steered else FAST_SAMPLER), "network_bfloat16": fast_bfloat16(device)}


def rho_time_grid(num_steps: int, eps_t: float = 1e-3, rho: float = 1.0) -> torch.Tensor:
    """t_i = (1 + i/(n−1) (ε^{1/ρ} − 1))^ρ, float64 (n,). ρ = 1 is ``linspace(1, ε, n)``."""
    if num_steps < 1:
        raise ValueError("num_steps must be ≥ 1")
    if not rho > 0:
        raise ValueError(f"the grid's rho must be > 0, got {rho}")
    if num_steps == 1:
        return torch.ones(1, dtype=torch.float64)
    u = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)                # i/(n−1)
    return (1.0 + u * (eps_t ** (1.0 / rho) - 1.0)) ** rho


def periodic_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a − b wrapped into [−½, ½) (the shortest displacement on the unit torus)."""
    d = a - b
    return d - torch.floor(d + 0.5)


def coords_ode_step(f: torch.Tensor, score: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor,
                    x0_prev: torch.Tensor | None = None, r: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-flow step of the wrapped VE process t → s (module doc). sigma_t, sigma_s: (ΣN,) per atom.

    Returns (f_s wrapped, x̂_0 unwrapped: f + σ_t² score, to be passed as ``x0_prev`` next step). With ``x0_prev``
    and ``r`` (h_prev/h, a float: σ's N^{−1/3} factor cancels in h) the 2M correction is used; σ_s = 0 gives f_s = wrap(x̂_0).
    """
    x0 = f + sigma_t.pow(2)[:, None] * score                                    # Tweedie x̂_0 = f + σ_t² s
    d = x0
    if x0_prev is not None and r is not None:                                   # D = x̂_0 + (x̂_0 − x̂_0,prev)/(2r)
        d = x0 + periodic_difference(x0, x0_prev) / (2.0 * r)
    ratio = (sigma_s / sigma_t)[:, None]                                        # σ_s/σ_t
    return wrap(ratio * f + (1.0 - ratio) * d), x0


def lattice_ode_step(lattice: torch.Tensor, score: torch.Tensor, mu: torch.Tensor, alpha_t: torch.Tensor,
                     alpha_s: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor,
                     y0_prev: torch.Tensor | None = None, r: float | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-flow step of the lattice VP process t → s (module doc); per-crystal (B,) α and σ.

    Returns (L_s, ŷ_0 = (y + σ_t² score)/α_t with y = L − μ_N, to be passed as ``y0_prev`` next step).
    """
    a_t, a_s = alpha_t[:, None, None], alpha_s[:, None, None]
    s_t, s_s = sigma_t[:, None, None], sigma_s[:, None, None]
    y = lattice - mu                                                            # y = L − μ_N
    y0 = (y + s_t.pow(2) * score) / a_t                                         # Tweedie ŷ_0
    d = y0
    if y0_prev is not None and r is not None:
        d = y0 + (y0 - y0_prev) / (2.0 * r)                      # 2M: D = ŷ_0 + (ŷ_0 − ŷ_0,prev)/(2r)
    y_s = (s_s / s_t) * y + (a_s - a_t * s_s / s_t) * d                         # (σ_s/σ_t) y + (α_s − α_t σ_s/σ_t) D
    return mu + y_s, y0


def _masked_posterior(types_model, x_k: torch.Tensor, logits: torch.Tensor, k, k_prev):
    """(sample, mean, todo, post) shared by the reveal steps: copies of x_k, the indices of its masked atoms and, for
    those, the posterior q(x_{k'} | x_k, x̂_0) with x̂_0 = softmax(logits) (mean: its argmax; empty ``todo``: nothing
    to reveal)."""
    n = x_k.shape[0]
    sample, mean = x_k.clone(), x_k.clone()
    todo = (x_k == types_model.mask_class).nonzero().squeeze(-1)
    if not todo.numel():
        return sample, mean, todo, None
    k = torch.as_tensor(k, device=x_k.device).expand(n)[todo]
    k_prev = torch.as_tensor(k_prev, device=x_k.device).expand(n)[todo]
    post = types_model.posterior_probs(x_k[todo], torch.softmax(logits[todo].double(), -1), k, k_prev)
    mean[todo] = post.argmax(-1)
    return sample, mean, todo, post


def confidence_reveal_step(types_model, x_k: torch.Tensor, x0_logits: torch.Tensor, k: torch.Tensor,
                           k_prev: torch.Tensor, batch_idx: torch.Tensor, num_crystals: int,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Confidence-ordered unmasking (MaskGIT, Chang et al. 2022) of the D3PM step x_k → x_{k'} (class indices).

    How many atoms of a crystal are revealed is drawn as in the reference step (each masked atom independently with
    the posterior's reveal probability p = 1 − q(x_{k'} = m | x_k = m, x̂_0), so the forward marginals are kept);
    which atoms are revealed is not random: every masked atom draws a class c ∝ p_θ(x_0), and the n_b atoms of
    crystal b with the highest confidence log p_θ(x_0 = c) are revealed as their c::

        n_b = Σ_{masked i in b} 1[u_i < p_i],     reveal {i in b : rank_b(log p_θ(c_i | ·)) < n_b}

    Revealed atoms never change. Returns (sample, mean); the mean of a masked atom is the posterior argmax.
    """
    sample, mean, todo, post = _masked_posterior(types_model, x_k, x0_logits, k, k_prev)
    if not todo.numel():
        return sample, mean
    p_reveal = 1.0 - post[:, types_model.mask_class]                            # p_i
    u = torch.rand(todo.shape, generator=generator, device=x_k.device, dtype=torch.float64)
    crystal = batch_idx[todo]
    count = torch.zeros(num_crystals, dtype=torch.long, device=x_k.device).index_add_(
        0, crystal, (u < p_reveal).long())                                      # n_b
    log_p0 = torch.log_softmax(x0_logits[todo].double(), -1)
    cls = torch.multinomial(log_p0.exp().float(), 1, generator=generator).squeeze(-1)  # c_i ∝ p_θ(x_0)
    confidence = log_p0.gather(-1, cls[:, None]).squeeze(-1)
    order = torch.argsort(-confidence, stable=True)                             # most confident first ...
    order = order[torch.argsort(crystal[order], stable=True)]                   # ... within each crystal
    first = torch.searchsorted(crystal[order], crystal[order], right=False)     # first position of its crystal
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=x_k.device) - first
    reveal = rank < count[crystal]
    sample[todo[reveal]] = cls[reveal]
    return sample, mean


def coherent_reveal_step(types_model, x_k: torch.Tensor, logits: torch.Tensor, beta: float, k: torch.Tensor,
                         k_prev: torch.Tensor, batch_idx: torch.Tensor, num_crystals: int,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The D3PM step x_k → x_{k'} (class indices) with the coherence bias acting within the step as well.

    At 100 steps a step spans ~10 of the T = 1000 reveal levels, so two atoms of a cell are often revealed in the
    same step; the reference draws them independently, each blind to the other's element. Here which atoms are
    revealed is drawn as in the reference step (each masked atom independently with the posterior's reveal
    probability p_i = 1 − q(x_{k'} = m | x_k = m, x̂_0)); the revealed atoms of a crystal then draw their classes one
    after the other, in a random order, each seeing the elements drawn before it in this step::

        p(c_j) ∝ exp( ℓ_j,c + β · 1[c was drawn by an earlier atom of the crystal in this step, and not held before] )

    ``logits`` ℓ already carry β on the elements the crystal held before the step (so with one reveal per crystal and
    step — the usual case at 1000 steps — the law is the reference's). Revealed atoms never change. Returns
    (sample, mean); the mean of a masked atom is the posterior argmax of ℓ, as in the reference step.
    """
    mask = types_model.mask_class
    sample, mean, todo, post = _masked_posterior(types_model, x_k, logits, k, k_prev)
    if not todo.numel():
        return sample, mean
    u = torch.rand(todo.shape, generator=generator, device=x_k.device, dtype=torch.float64)
    reveal = todo[u < 1.0 - post[:, mask]]                                      # u_i < p_i
    if not reveal.numel():
        return sample, mean
    crystal = batch_idx[reveal]
    key = torch.rand(reveal.shape, generator=generator, device=x_k.device, dtype=torch.float64)
    order = torch.argsort(key)                                                  # a random order ...
    order = order[torch.argsort(crystal[order], stable=True)]                   # ... within each crystal
    first = torch.searchsorted(crystal[order], crystal[order], right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=x_k.device) - first
    held = torch.zeros(num_crystals, logits.shape[-1], dtype=torch.bool, device=x_k.device)
    before = x_k != mask
    held[batch_idx[before], x_k[before]] = True                                 # held before the step
    drawn = torch.zeros_like(held)                                              # drawn in this step
    for r in range(int(rank.max()) + 1):
        now = reveal[rank == r]
        extra = beta * (drawn & ~held)[batch_idx[now]].to(logits.dtype)
        probs = torch.softmax((logits[now] + extra).double(), -1)
        cls = torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)
        sample[now] = cls
        drawn[batch_idx[now], cls] = True
    return sample, mean


# ---------------------------------------------------------------------------------------------- reduced noise
# Reduced-noise steps (``noise_scale`` η ≤ 1; η = 1 is the reference step, drawing the same random numbers):
# the stochastic term of the ancestral predictor and of the Langevin corrector is multiplied by η, i.e. the sampler
# runs at a lower temperature (η² for the corrector's stationary law; as FrameDiff / RFdiffusion's "noise scale"):
#
#     coordinates:  predictor  f_s = wrap(f + σ²_{t|s} s + η sqrt(σ²_{t|s}) σ_s/σ_t z)
#                   corrector  f ← wrap(f + ε s + η sqrt(2ε) z)
#     lattice:      predictor  L_s = mean + η sqrt(σ²_{t|s}) σ_s/σ_t Z_sym          (mean as in lattice.py)
#                   corrector  L ← polar(L + ε s + η sqrt(2ε) Z_sym)
# with ε the reference's Langevin step size (computed from the same z), so only the noise's size changes.


def coords_predictor_scaled(x, score, sigma_t, sigma_s, eta: float, generator=None):
    """Ancestral VE step with its noise × η (see above). Returns (wrapped sample, wrapped mean)."""
    var_ts = (sigma_t.pow(2) - sigma_s.pow(2))[:, None]                       # σ²_{t|s}
    mean = x + var_ts * score
    noise_std = var_ts.clamp_min(0).sqrt() * (sigma_s / sigma_t)[:, None]
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return wrap(mean + eta * noise_std * z), wrap(mean)


def coords_corrector_scaled(x, score, batch_idx, num_crystals, snr, eta: float, generator=None):
    """Langevin corrector on the torus with its noise × η. Returns (wrapped sample, wrapped mean)."""
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    step = langevin_step_size(score, z, batch_idx, num_crystals, snr, alpha=1.0)   # ε from the reference's z
    mean = x + step * score
    return wrap(mean + eta * torch.sqrt(2 * step) * z), wrap(mean)


def lattice_predictor_scaled(lattice_sde, lattice, score, t, s, num_atoms, eta: float, generator=None):
    """Ancestral lattice VP step with its noise × η: the reference step's mean plus η times its noise."""
    sample, mean = lattice_sde.predictor_step(lattice, score, t, s, num_atoms, generator)
    return mean + eta * (sample - mean), mean


def lattice_corrector_scaled(lattice_sde, lattice, score, t, dt, snr, eta: float, generator=None):
    """Langevin lattice step with its noise × η, then the polar re-symmetrisation (as lattice.py)."""
    B = lattice.shape[0]
    z = symmetric_noise(lattice.shape, generator, lattice.device, lattice.dtype)
    t0 = t[0] if t.ndim else t
    alpha_c = lattice_sde.alpha(t0).pow(2) / lattice_sde.alpha((t0 + dt).clamp_min(0.0)).pow(2)
    step = langevin_step_size(score, z, torch.arange(B, device=lattice.device), B, snr, alpha_c)
    mean = lattice + step * score
    return symmetric_polar_factor(mean + eta * torch.sqrt(2 * step) * z), symmetric_polar_factor(mean)


# ------------------------------------------------------------------------------------------- the default
SAMPLERS = ("fast", "reference")


def choose_sampler(sampler: str | None, steps: int | None, meta: dict) -> str:
    """The sampler a request gets: its own ``sampler`` ("fast" | "reference") if given; otherwise "fast" when it gives
    no ``steps`` and the model is a kit model (a MatterGen port keeps its reference sampler), else "reference":
    explicit steps (``--steps 1000``) give MatterGen's reference sampler exactly. Conditioned and templated requests
    get the fast sampler too, with the corrector at full noise (FAST_SAMPLER_STEERED): on the proof's requests at the
    proof's 100 steps they steer as the reference sampler does (benchmarks/results/conditioning/fast_sampler/summary.md:
    band gap, chemical systems, Wyckoff templates)."""
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS} (or None for the default), got {sampler!r}")
        return sampler
    return "fast" if steps is None and meta.get("source") != "mattergen" else "reference"


def sampler_steps(sampler: str, steps: int | None, meta: dict) -> int | None:
    """The request's steps, else FAST_STEPS for the fast sampler, else the model's recommended number (1000)."""
    if steps is not None:
        return steps
    return FAST_STEPS if sampler == "fast" else int(meta.get("recommended_steps", 1000))
