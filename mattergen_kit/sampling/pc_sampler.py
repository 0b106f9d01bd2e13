r"""Predictor–corrector sampler for :class:`~mattergen_kit.diffusion.CrystalDiffusion` (MatterGen ref §6, §14.2).

Initialisation (per crystal with N atoms)::

    x_1 = mask (Z = 101) for every atom        (CSP: the given atom types, never changed)
    f_1 = wrap(σ_max N^{−1/3} ε)
    L_1 = μ_N + sqrt(v_N) Z_sym

Loop over t_i = linspace(1, 1e−3, num_steps), dt = −(1 − 1e−3)/(num_steps − 1), s = t_i + dt::

    repeat n_corrector_steps:                    # one (guided) network call each
        out = D(x, f, L, t_i)
        f ← Langevin(f, out.coord_score / σ(t_i; N), snr 0.4)              (coords.py)
        L ← Langevin(L, out.lattice_score / std(t_i; N), snr 0.2), polar    (lattice.py)
    out = D(x, f, L, t_i)                        # predictor: one more call, at the corrected state
    f, f̄ ← ancestral VE step t_i → s;  L, L̄ ← ancestral VP step t_i → s
    x, x̄ ← D3PM step x_k → x_{k'} with p = softmax(masked guided logits / τ)  (atom_types.py; τ = 1 reference)
           optional remasking (not the reference): revealed atoms re-masked with σ_i = r |dt| while
           t_i ∈ [t_off, t_on], the reveals rescaled to keep ᾱ_{k'} (atom_types.py, "Remasking")
    continue with the samples; keep the means
    return the noise-free means (x̄, f̄, L̄) of the last step

D3PM steps: k = floor(999 t_i) + 1 and k' = floor(999 t_{i+1}) + 1 (k' = 0 at the last step) with the
jump posterior q(x_{k'} | x_k, x_0) of the T = 1000 process. With num_steps = 1000, k' = k − 1 at every
step: exactly the reference's one-step sampler. With fewer steps the same forward process is kept and each
sampler step reveals atoms with the exact multi-step posterior (see atom_types.py) — our documented choice.

Guided network call (ref §9): out = u + γ (c − u) on coordinate scores, lattice scores and type logits;
γ = 0 calls only the unconditional branch, γ = 1 only the conditional one, otherwise one call on a
batch of 2B crystals (first B unconditional, last B conditional). The model is called as
``model(noisy, t, conditions=..., use_condition=Tensor(B,) bool)`` under ``torch.no_grad()`` in eval
mode (its mode is restored afterwards). Disallowed elements and the mask class are removed from the
logits at inference (−1e10, ref §6.6), optionally restricted further by ``allowed_elements``.

Non-finite values: every network call's input state (lattice, coordinates) and output (scores, logits) are checked,
and the result at the end (one ``isfinite`` reduction and host sync per call); NaN/inf raises
:class:`NonFiniteSampleError` (a ``RuntimeError``) naming the step and the field — what an untrained or diverged
model does — instead of failing later inside the lattice's SVD.

Determinism: all randomness comes from one ``torch.Generator`` seeded with ``seed`` (on the model's
device), in a fixed order. The Langevin step size uses norms averaged over the crystals of a batch
(as in the reference), so samples depend on ``batch_size`` as well as on the seed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from mattergen_kit.data import MASK_Z, CrystalBatch
from mattergen_kit.diffusion.atom_types import allowed_classes_mask, continuous_to_discrete, mask_logits
from mattergen_kit.diffusion.joint import CrystalDiffusion, DenoiserOutput
from mattergen_kit.sampling.few_step import (coherent_reveal_step, confidence_reveal_step, coords_corrector_scaled,
                                             coords_ode_step,
                                             coords_predictor_scaled, lattice_corrector_scaled, lattice_ode_step,
                                             lattice_predictor_scaled, rho_time_grid)
from mattergen_kit.sampling.guidance import combine_guidance
from mattergen_kit.sampling.trajectory import DenoisingTrajectory


#: predictor updates of coordinates and lattice: the reference SDE step, probability flow 1st / 2nd order (few_step.py)
CONTINUOUS_UPDATES = ("ancestral", "ode", "ode2m")


class NonFiniteSampleError(RuntimeError):
    """The sampler met NaN/inf in the model's predictions or in the sampled state (``step``, ``field``)."""

    def __init__(self, step: int, num_steps: int, t: float, field: str, where: str):
        self.step, self.num_steps, self.t, self.field = step, num_steps, t, field
        super().__init__(
            f"sampler step {step}/{num_steps} (t = {t:.4g}, {where}): the {field} is not finite (NaN/inf). The "
            "model's predictions are not finite — it is untrained or diverged; train it longer / check the checkpoint")


def _check_finite(step: int, num_steps: int, t: float, where: str, coords: torch.Tensor, lattice: torch.Tensor,
                  out: DenoiserOutput | None = None) -> None:
    """Raise :class:`NonFiniteSampleError` if the state the network was given (coords, lattice) or its output
    (scores, type logits; masked logits are −1e10, finite) holds NaN/inf. One reduction and one host sync when
    all is finite; the field is only looked up on failure."""
    fields = [("sampled lattice", lattice, "its input"), ("sampled fractional coordinates", coords, "its input")]
    if out is not None:
        fields += [("predicted lattice score", out.lattice_score, "its output"),
                   ("predicted coordinate score", out.coord_score, "its output"),
                   ("predicted atom-type logits", out.type_logits, "its output")]
    ok = torch.isfinite(fields[0][1]).all()
    for _, x, _ in fields[1:]:
        ok = ok & torch.isfinite(x).all()
    if bool(ok):
        return
    for field, x, side in fields:
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteSampleError(step, num_steps, t, field, where if out is None else f"{where}, {side}")


def _to_z(x: Any) -> int:
    if isinstance(x, str):
        from mattergen_kit.constants import atomic_number

        return atomic_number(x)
    return int(x)


def _allowed_mask(allowed_elements, num_classes: int) -> torch.Tensor | None:
    """None, a (K,) or (B, K) bool tensor, or a sequence of atomic numbers / element symbols → bool tensor."""
    if allowed_elements is None:
        return None
    if torch.is_tensor(allowed_elements):
        return allowed_elements.bool()
    return allowed_classes_mask([_to_z(e) for e in allowed_elements], num_classes)


def coherence_bias_points(coherence_bias) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t_points, beta_points)`` (float64) of a coherence bias β(t) given as two sequences: equal lengths ≥ 1,
    finite values, t strictly increasing; else ValueError."""
    why = "coherence_bias must be (t_points, beta_points) of equal length with increasing t and finite values"
    try:
        t_points, beta_points = (torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in coherence_bias)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(why) from None
    if (len(t_points) != len(beta_points) or len(t_points) < 1 or not bool(torch.isfinite(t_points).all())
            or not bool(torch.isfinite(beta_points).all()) or bool((t_points[1:] <= t_points[:-1]).any())):
        raise ValueError(why)
    return t_points, beta_points


class PredictorCorrectorSampler:
    """MatterGen's predictor–corrector sampler (equations in the module docstring).

    Parameters
    ----------
    diffusion: the :class:`CrystalDiffusion` the model was trained with (CSP if ``fields`` lacks types).
    num_steps: predictor steps (reference: 1000).
    snr_coords, snr_lattice: Langevin signal-to-noise ratios (0.4, 0.2).
    n_corrector_steps: corrector steps per predictor step (1).
    eps_t: last time of the grid (1e−3).
    type_temperature: τ in p(x_0) = softmax(logits / τ) used for the atom-type reveals (1 = the reference;
        τ < 1 sharpens each reveal toward the network's most likely elements).
    coherence_bias: β(t) added to the logits of the elements a crystal already holds before each reveal,
        ``(t_points, beta_points)`` interpolated linearly in t (None = the reference sampler). Fitted on the val
        split as β(t) = logit(D_t) − logit(M_t), where D_t is the share of masked atoms whose element is already
        revealed in the cell and M_t the probability the network puts there
        (benchmarks/bench_type_coherence.py --fit): it corrects the network's measured under-weighting of the
        cell's own elements without changing the first reveal or favouring any element globally.
    remask_rate: r, re-masking probability of a revealed atom per unit time inside ``remask_window`` (per step
        σ = r |dt|; 0 = the reference, which never changes a revealed atom). r = 2 over a window of width 0.5
        re-draws a revealed atom about once. Not used in CSP mode (fixed atom types).
    remask_window: (t_off, t_on), the times at which atoms may be re-masked (default (0.05, 0.55)).

    Few-step options (issue 21; the defaults are the reference sampler, bit for bit; formulas in few_step.py):

    grid_rho: ρ of the time grid t_i = (1 + i/(n−1)(ε^{1/ρ} − 1))^ρ; 1 = linspace(1, ε, n), ρ > 1 puts more steps
        at small t. Off the linear grid a step goes t_i → t_{i+1} (→ 0 after the last).
    corrector_t_max: the corrector runs only at steps with t_i ≤ corrector_t_max (1 = every step). Network calls
        per crystal: num_steps + n_corrector_steps · #{i: t_i ≤ corrector_t_max}.
    continuous_update: how the predictor moves coordinates and lattice: "ancestral" (the reference SDE step),
        "ode" (probability-flow / DDIM step, deterministic) or "ode2m" (DPM-Solver++(2M): second order from the
        previous step's Tweedie estimate, same one call per step). Every variant ends on Tweedie's x̂_0.
    network_bfloat16: run the network under ``torch.autocast(bfloat16)`` (its matrix products in bfloat16; the
        shipped model was trained under bf16 autocast); outputs are cast back to float32. About 2× faster per call
        on a CPU with AVX512-BF16 (measured at batch 32), relative output error ~0.5 %. False = float32, the reference.
    noise_scale: η, the factor on the random term of the ancestral predictor and of the Langevin corrector of
        coordinates and lattice (1 = the reference; η < 1 samples at a lower temperature, few_step.py).
    type_unmasking: "random" (the reference: every masked atom revealed independently) or "confidence"
        (MaskGIT: as many atoms per crystal as the reference would reveal, the most confident ones). Not with
        remasking or symmetry templates.
    coherence_scale: s, the factor on the coherence bias: s · β(t) is used (1 = the fitted β).
    coherence_within_step: with a coherence bias, the atoms revealed in the same step draw their elements one after
        the other, each seeing the elements drawn before it in the step (few_step.coherent_reveal_step; False = the
        reference: drawn independently). Not with confidence unmasking; the steps that remask (remask_rate > 0,
        inside remask_window) and sampling under symmetry templates keep their own reveal steps.
    """

    def __init__(self, diffusion: CrystalDiffusion, num_steps: int = 1000, snr_coords: float = 0.4,
                 snr_lattice: float = 0.2, n_corrector_steps: int = 1, eps_t: float = 1e-3,
                 type_temperature: float = 1.0, coherence_bias=None, remask_rate: float = 0.0,
                 remask_window: tuple[float, float] = (0.05, 0.55), grid_rho: float = 1.0,
                 corrector_t_max: float = 1.0, continuous_update: str = "ancestral", type_unmasking: str = "random",
                 network_bfloat16: bool = False, noise_scale: float = 1.0, coherence_scale: float = 1.0,
                 coherence_within_step: bool = False):
        if num_steps < 1:
            raise ValueError("num_steps must be ≥ 1")
        if not type_temperature > 0:
            raise ValueError(f"type_temperature must be > 0, got {type_temperature}")
        self.type_temperature = float(type_temperature)
        if not remask_rate >= 0:
            raise ValueError(f"remask_rate must be ≥ 0, got {remask_rate}")
        t_off, t_on = (float(x) for x in remask_window)
        if not 0.0 <= t_off < t_on <= 1.0:
            raise ValueError(f"remask_window must be (t_off, t_on) with 0 ≤ t_off < t_on ≤ 1, got {remask_window}")
        self.remask_rate, self.remask_window = float(remask_rate), (t_off, t_on)
        self.coherence_bias = None
        if coherence_bias is not None:
            self.coherence_bias = coherence_bias_points(coherence_bias)
        if not grid_rho > 0:
            raise ValueError(f"grid_rho must be > 0, got {grid_rho}")
        if continuous_update not in CONTINUOUS_UPDATES:
            raise ValueError(f"continuous_update must be one of {CONTINUOUS_UPDATES}, got {continuous_update!r}")
        if n_corrector_steps < 0:
            raise ValueError(f"n_corrector_steps must be ≥ 0, got {n_corrector_steps}")
        self.grid_rho, self.corrector_t_max = float(grid_rho), float(corrector_t_max)
        self.continuous_update = continuous_update
        if type_unmasking not in ("random", "confidence"):
            raise ValueError(f"type_unmasking must be 'random' or 'confidence', got {type_unmasking!r}")
        if type_unmasking == "confidence" and remask_rate:
            raise ValueError("type_unmasking='confidence' cannot be combined with remask_rate > 0")
        self.type_unmasking = type_unmasking
        if not coherence_scale >= 0:
            raise ValueError(f"coherence_scale must be ≥ 0, got {coherence_scale}")
        self.coherence_scale = float(coherence_scale)
        if coherence_within_step and type_unmasking != "random":
            raise ValueError("coherence_within_step works with the random reveal order only (type_unmasking='random')")
        self.coherence_within_step = bool(coherence_within_step)
        self.network_bfloat16 = bool(network_bfloat16)
        if not 0.0 <= noise_scale <= 1.0:
            raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")
        self.noise_scale = float(noise_scale)
        self.diffusion = diffusion
        self.num_steps = num_steps
        self.snr_coords = snr_coords
        self.snr_lattice = snr_lattice
        self.n_corrector_steps = n_corrector_steps
        self.eps_t = eps_t
        self.last_seed: int | None = None
        self.last_trajectory = None  # DenoisingTrajectory of the last sample(record_every=k) call

    def __repr__(self) -> str:
        return (f"PredictorCorrectorSampler(num_steps={self.num_steps}, snr_coords={self.snr_coords}, "
                f"snr_lattice={self.snr_lattice}, n_corrector_steps={self.n_corrector_steps}, "
                f"type_temperature={self.type_temperature}, remask_rate={self.remask_rate}, "
                f"grid_rho={self.grid_rho}, corrector_t_max={self.corrector_t_max}, "
                f"continuous_update={self.continuous_update!r}, type_unmasking={self.type_unmasking!r}, "
                f"network_bfloat16={self.network_bfloat16}, noise_scale={self.noise_scale}, "
                f"coherence_scale={self.coherence_scale}, coherence_within_step={self.coherence_within_step})")

    # ------------------------------------------------------------------ public
    def timesteps(self) -> torch.Tensor:
        """t_i = linspace(1, eps_t, num_steps) (float64); the ρ-grid of few_step.py when grid_rho ≠ 1."""
        if self.grid_rho == 1.0:
            return torch.linspace(1.0, self.eps_t, self.num_steps, dtype=torch.float64)
        return rho_time_grid(self.num_steps, self.eps_t, self.grid_rho)

    def network_calls(self) -> int:
        """Network calls per crystal (NFE; a guided call on the 2B batch counts once):
        num_steps + n_corrector_steps · #{i: t_i ≤ corrector_t_max}."""
        with_corrector = int((self.timesteps() <= self.corrector_t_max).sum())
        return self.num_steps + self.n_corrector_steps * with_corrector

    def sample(self, model: torch.nn.Module, num_atoms: torch.Tensor | Sequence[int] | None = None,
               seed: int | None = None, guidance_scale: float = 0.0, conditions: dict[str, Any] | None = None,
               fixed_atom_types: torch.Tensor | Sequence[Sequence] | None = None, batch_size: int | None = None,
               progress: bool = True, allowed_elements=None, record_every: int | None = None,
               step_callback=None, symmetry=None) -> CrystalBatch:
        """Generate crystals; returns a CPU :class:`CrystalBatch` of the final noise-free means.

        num_atoms: (B,) atoms per crystal (may be omitted when ``fixed_atom_types`` is a list per crystal).
        seed: seeds one ``torch.Generator``; same seed (and batch_size) ⇒ identical samples.
        guidance_scale: γ of classifier-free guidance (0 = unconditional model only).
        conditions: {name: value} — a scalar/str for all crystals, or a per-crystal list / (B,) tensor.
        fixed_atom_types: CSP — (ΣN,) atomic numbers, or one sequence of Z / element symbols per crystal.
        batch_size: crystals per network batch (default: all at once).
        allowed_elements: restrict the sampled elements (atomic numbers / symbols, or a (K,) / (B, K) bool
            class mask); always intersected with MatterGen's 76 allowed elements.
        record_every: also record the denoising trajectory (the prior, the state after every
            ``record_every``-th step, and the result) into ``self.last_trajectory``, a
            :class:`~mattergen_kit.sampling.trajectory.DenoisingTrajectory` of CPU tensors; None (default)
            records nothing. Recording never changes the samples.
        step_callback: called as ``step_callback(step, num_steps)`` after every sampler step (1-based) of each
            batch; an exception it raises stops sampling (how a notebook's Stop button interrupts a batch).
        symmetry: a :class:`~mattergen_kit.sampling.symmetry.SymmetryProjector` (one Wyckoff template or None per
            crystal): the state of those crystals is projected onto their template's space group after every
            step, so the samples have it exactly (symmetry.py). Not with ``fixed_atom_types``.

        >>> sampler = PredictorCorrectorSampler(model.diffusion, num_steps=20)          # doctest: +SKIP
        >>> batch = sampler.sample(model.denoiser, [4, 6], seed=0, record_every=5)     # doctest: +SKIP
        >>> sampler.last_trajectory.steps                                              # doctest: +SKIP
        [0, 5, 10, 15, 20]
        """
        if record_every is not None and (isinstance(record_every, bool) or int(record_every) < 1):
            raise ValueError(f"record_every must be a positive number of steps (or None), got {record_every!r}")
        diff = self.diffusion
        fixed = None
        if fixed_atom_types is not None:
            if torch.is_tensor(fixed_atom_types):
                fixed = fixed_atom_types.long().reshape(-1).cpu()
            else:
                per = [[_to_z(z) for z in crystal] for crystal in fixed_atom_types]
                if num_atoms is None:
                    num_atoms = [len(p) for p in per]
                fixed = torch.tensor([z for p in per for z in p], dtype=torch.long)
        if num_atoms is None:
            raise ValueError("num_atoms is required (or give fixed_atom_types per crystal)")
        num_atoms = torch.as_tensor(num_atoms, dtype=torch.long).reshape(-1).cpu()
        if bool((num_atoms < 1).any()):
            raise ValueError("every crystal needs at least one atom")
        if fixed is None and not diff.diffuse_types:
            raise ValueError("this diffusion does not diffuse atom types (CSP): pass fixed_atom_types")
        if fixed is not None:
            if fixed.numel() != int(num_atoms.sum()):
                raise ValueError(f"fixed_atom_types has {fixed.numel()} atoms, num_atoms sums to {int(num_atoms.sum())}")
            if bool(((fixed < 1) | (fixed >= MASK_Z)).any()):
                raise ValueError("fixed_atom_types must be atomic numbers 1..100")
        if guidance_scale != 0.0 and not conditions:
            raise ValueError("guidance_scale ≠ 0 needs conditions")
        B = num_atoms.numel()
        if symmetry is not None:
            if fixed is not None:
                raise ValueError("symmetry templates fix the orbits of the atoms; they cannot be combined with "
                                 "fixed_atom_types")
            if self.type_unmasking == "confidence":
                raise ValueError("type_unmasking='confidence' reveals atoms one by one, symmetry templates by orbit: "
                                 "use type_unmasking='random' with symmetry")
            if len(symmetry.templates) != B:
                raise ValueError(f"symmetry has {len(symmetry.templates)} templates for {B} crystals")
            for b, template in enumerate(symmetry.templates):
                if template is not None and template.num_atoms != int(num_atoms[b]):
                    raise ValueError(f"crystal {b}: {int(num_atoms[b])} atoms, but its Wyckoff template has "
                                     f"{template.num_atoms}")
        allowed = _allowed_mask(allowed_elements, diff.atom_types.num_classes)
        if allowed is not None and allowed.ndim == 2 and allowed.shape[0] != B:
            raise ValueError(f"allowed_elements has {allowed.shape[0]} rows for {B} crystals")

        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, (1,)).item())
        self.last_seed = seed
        generator = torch.Generator(device=device).manual_seed(seed)

        batch_size = batch_size or B
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), num_atoms.cumsum(0)])
        was_training = model.training
        model.eval()
        self.last_trajectory = None
        try:
            results, trajectories = [], []
            n_chunks = (B + batch_size - 1) // batch_size
            for c, start in enumerate(range(0, B, batch_size)):
                stop = min(start + batch_size, B)
                a, b = int(offsets[start]), int(offsets[stop])
                chunk = self._sample_batch(
                    model, num_atoms[start:stop].to(device), generator, guidance_scale,
                    self._slice_conditions(conditions, start, stop, B, device),
                    None if fixed is None else fixed[a:b].to(device),
                    None if allowed is None else (allowed[start:stop] if allowed.ndim == 2 else allowed).to(device),
                    progress, f"sampling {c + 1}/{n_chunks}" if n_chunks > 1 else "sampling",
                    None if record_every is None else DenoisingTrajectory(), record_every, step_callback,
                    None if symmetry is None else symmetry.slice(start, stop))
                chunk, trajectory = chunk if record_every is not None else (chunk, None)
                results.append(chunk.to("cpu"))
                trajectories.append(trajectory)
        finally:
            model.train(was_training)
        if record_every is not None:
            self.last_trajectory = DenoisingTrajectory.concatenate(trajectories)
        return results[0] if len(results) == 1 else CrystalBatch.collate(results)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _slice_conditions(conditions, start, stop, B, device):
        if not conditions:
            return None
        n = stop - start
        out: dict[str, Any] = {}
        for name, value in conditions.items():
            if isinstance(value, str):
                out[name] = [value] * n
            elif torch.is_tensor(value) and value.ndim > 0 or isinstance(value, (list, tuple)):
                if len(value) != B:
                    raise ValueError(f"condition {name!r} has {len(value)} values for {B} crystals")
                v = value[start:stop]
                if torch.is_tensor(v):
                    out[name] = v.to(device)
                elif all(isinstance(x, str) for x in v):
                    out[name] = list(v)
                else:
                    out[name] = torch.tensor([float(x) for x in v], dtype=torch.float32, device=device)
            else:
                out[name] = torch.full((n,), float(value), dtype=torch.float32, device=device)
        return out

    @staticmethod
    def _duplicate_conditions(conditions):
        if conditions is None:
            return None
        return {k: (torch.cat([v, v]) if torch.is_tensor(v) else list(v) + list(v)) for k, v in conditions.items()}

    def _denoise(self, model, noisy: CrystalBatch, t: torch.Tensor, conditions, scale: float,
                 allowed: torch.Tensor | None) -> DenoiserOutput:
        """Guided network output with inference-time logit masking (one model call)."""
        B, device = noisy.num_crystals, noisy.device
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.network_bfloat16):
            if scale == 0.0 or scale == 1.0:
                use = torch.full((B,), scale == 1.0, dtype=torch.bool, device=device)
                out = model(noisy, t, conditions=conditions, use_condition=use)
            else:
                both = CrystalBatch.collate([noisy, noisy])
                use = torch.cat([torch.zeros(B, dtype=torch.bool, device=device),
                                 torch.ones(B, dtype=torch.bool, device=device)])
                out2 = model(both, torch.cat([t, t]), conditions=self._duplicate_conditions(conditions),
                             use_condition=use)
                n = noisy.atom_types.shape[0]
                u = DenoiserOutput(out2.type_logits[:n], out2.coord_score[:n], out2.lattice_score[:B])
                c = DenoiserOutput(out2.type_logits[n:], out2.coord_score[n:], out2.lattice_score[B:])
                out = combine_guidance(u, c, scale)
        if self.network_bfloat16:                                      # back to float32 for the sampler's arithmetic
            out = DenoiserOutput(out.type_logits.float(), out.coord_score.float(), out.lattice_score.float())
        if allowed is not None and allowed.ndim == 2:
            allowed = allowed[noisy.batch_idx]                         # per crystal → per atom
        return DenoiserOutput(mask_logits(out.type_logits, allowed), out.coord_score, out.lattice_score)

    def _beta(self, t: float) -> float:
        """s · β(t), β linear in t between the fitted points, constant beyond the ends."""
        import numpy as np

        t_points, beta_points = self.coherence_bias
        beta = float(np.interp(t, t_points.numpy(), beta_points.numpy()))
        return beta if self.coherence_scale == 1.0 else self.coherence_scale * beta

    def _coherence_term(self, t: float, types: torch.Tensor, bidx: torch.Tensor, B: int, K: int) -> torch.Tensor:
        """β(t) · 1[element c is already revealed in the atom's crystal], (ΣN, K)."""
        beta = self._beta(t)
        revealed = types != MASK_Z
        present = torch.zeros(B, K, dtype=torch.bool, device=types.device)
        present[bidx[revealed], types[revealed] - 1] = True
        return beta * present[bidx].to(torch.float32)

    def _ode_step(self, coords, lattice, out, t, s_vec, sigma_t, sigma_s, std_t, num_atoms, x0_prev, y0_prev,
                  h_prev):
        """Probability-flow step t → s of coordinates and lattice (few_step.py); returns (coords, lattice,
        (x̂_0, ŷ_0, (h_coords, h_lattice)) for the next step's 2M correction).

        h = λ_s − λ_t with λ = −log σ (coordinates) and log(α/σ) (lattice); r = h_prev / h. The last step
        (s ≤ 0, σ_s = 0) and the first are first order."""
        lat = self.diffusion.lattice
        last = float(s_vec[0]) <= 0.0
        s_pos = s_vec.clamp_min(0.0)
        a_t, a_s = lat.alpha(t), lat.alpha(s_pos)
        std_s = torch.zeros_like(std_t[:, 0, 0]) if last else lat.std(s_pos, num_atoms)
        h = None
        second = self.continuous_update == "ode2m" and h_prev is not None and not last
        if not last:
            h_c = float(torch.log(sigma_t[0] / sigma_s[0]))                               # −log σ_s + log σ_t
            lam = lambda a, sd: torch.log(a) - torch.log(sd)                              # noqa: E731  λ = log(α/σ)
            h_l = float((lam(a_s, std_s) - lam(a_t, std_t[:, 0, 0]))[0])
            h = (h_c, h_l)
        coords, x0 = coords_ode_step(coords, out.coord_score / sigma_t[:, None], sigma_t, sigma_s,
                                     x0_prev if second else None, h_prev[0] / h[0] if second else None)
        lattice, y0 = lattice_ode_step(lattice, out.lattice_score / std_t, lat.limit_mean(num_atoms), a_t, a_s,
                                       std_t[:, 0, 0], std_s, y0_prev if second else None,
                                       h_prev[1] / h[1] if second else None)
        return coords, lattice, (x0, y0, h)

    def _sample_batch(self, model, num_atoms, generator, scale, conditions, fixed, allowed, progress, desc,
                      trajectory=None, record_every=None, step_callback=None, symmetry=None):
        from tqdm.auto import tqdm

        diff = self.diffusion
        device, B = num_atoms.device, num_atoms.numel()
        bidx = torch.repeat_interleave(torch.arange(B, device=device), num_atoms)
        n_atoms = int(num_atoms.sum())
        update_types = fixed is None

        # initialisation (ref §6.2)
        types = fixed.clone() if fixed is not None else torch.full((n_atoms,), MASK_Z, dtype=torch.long, device=device)
        coords = diff.coords.sample_prior(num_atoms, generator)
        lattice = diff.lattice.sample_prior(num_atoms, generator)
        sym = symmetry if symmetry is not None and any(t is not None for t in symmetry.templates) else None
        if sym is not None and sym.active(1.0):                                  # a symmetric prior sample
            coords, lattice = sym.state(coords, lattice, num_atoms)
        types_mean, coords_mean, lattice_mean = types, coords, lattice

        ts = self.timesteps()
        dt = -(1.0 - self.eps_t) / (self.num_steps - 1) if self.num_steps > 1 else -1.0
        k_grid = continuous_to_discrete(ts) + 1                                   # k_i = floor(999 t_i) + 1
        k_next = torch.cat([k_grid[1:], torch.zeros(1, dtype=torch.long)])       # k' (0 after the last step)

        def state(ty, f, L):
            return CrystalBatch(ty, f, L, num_atoms)

        if trajectory is not None:
            trajectory.record(0, float(ts[0]), types, coords, lattice, num_atoms)

        uniform = self.grid_rho == 1.0
        ode = self.continuous_update != "ancestral"
        x0_prev = y0_prev = h_prev = None                                          # 2M: the previous step's x̂_0
        for i in tqdm(range(self.num_steps), desc=desc, disable=not progress, leave=False):
            t_i = float(ts[i])
            if not uniform:                                                       # t_i → t_{i+1} (→ 0 at the end)
                dt = (float(ts[i + 1]) if i + 1 < self.num_steps else 0.0) - t_i
            t = torch.full((B,), t_i, dtype=torch.float32, device=device)
            sigma_t = diff.coords.sigma(t, num_atoms)[bidx]                      # σ(t; N) per atom
            std_t = diff.lattice.std(t, num_atoms)[:, None, None]                # std_t per crystal

            for _ in range(self.n_corrector_steps if t_i <= self.corrector_t_max else 0):  # corrector (ref §6.5)
                out = self._denoise(model, state(types, coords, lattice), t, conditions, scale, allowed)
                _check_finite(i + 1, self.num_steps, t_i, "corrector network call", coords, lattice, out)
                eta = self.noise_scale
                if eta == 1.0:
                    coords, _ = diff.coords.corrector_step(coords, out.coord_score / sigma_t[:, None], bidx, B,
                                                           self.snr_coords, generator)
                else:                                                             # noise × η (few_step.py)
                    coords, _ = coords_corrector_scaled(coords, out.coord_score / sigma_t[:, None], bidx, B,
                                                        self.snr_coords, eta, generator)
                try:                                                              # polar factor (SVD) of L
                    if eta == 1.0:
                        lattice, _ = diff.lattice.corrector_step(lattice, out.lattice_score / std_t, t, dt,
                                                                 self.snr_lattice, generator)
                    else:
                        lattice, _ = lattice_corrector_scaled(diff.lattice, lattice, out.lattice_score / std_t, t,
                                                              dt, self.snr_lattice, eta, generator)
                except torch.linalg.LinAlgError:                                  # finite score, overflowing step
                    raise NonFiniteSampleError(i + 1, self.num_steps, t_i, "sampled lattice",
                                               "corrector step") from None
                if sym is not None and sym.active(t_i):
                    coords, lattice = sym.state(coords, lattice, num_atoms)

            out = self._denoise(model, state(types, coords, lattice), t, conditions, scale, allowed)  # predictor
            _check_finite(i + 1, self.num_steps, t_i, "predictor network call", coords, lattice, out)
            s = t_i + dt
            s_vec = torch.full((B,), s, dtype=torch.float32, device=device)
            sigma_s = diff.coords.sigma(s_vec, num_atoms)[bidx] if s > 0 else torch.zeros_like(sigma_t)
            if ode:
                coords, lattice, (x0_prev, y0_prev, h_prev) = self._ode_step(
                    coords, lattice, out, t, s_vec, sigma_t, sigma_s, std_t, num_atoms, x0_prev, y0_prev, h_prev)
                coords_mean, lattice_mean = coords, lattice
            elif self.noise_scale == 1.0:
                coords, coords_mean = diff.coords.predictor_step(coords, out.coord_score / sigma_t[:, None],
                                                                 sigma_t, sigma_s, generator)
                lattice, lattice_mean = diff.lattice.predictor_step(lattice, out.lattice_score / std_t, t, s_vec,
                                                                    num_atoms, generator)
            else:                                                                 # noise × η (few_step.py)
                coords, coords_mean = coords_predictor_scaled(coords, out.coord_score / sigma_t[:, None], sigma_t,
                                                              sigma_s, self.noise_scale, generator)
                lattice, lattice_mean = lattice_predictor_scaled(diff.lattice, lattice, out.lattice_score / std_t, t,
                                                                 s_vec, num_atoms, self.noise_scale, generator)
            if update_types:                                                      # p(x_0) = softmax(logits / τ)
                logits = out.type_logits if self.type_temperature == 1.0 else out.type_logits / self.type_temperature
                if self.coherence_bias is not None:                              # + β(t) on the cell's own elements
                    logits = logits + self._coherence_term(t_i, types, bidx, B, logits.shape[-1])
                if sym is not None:                                               # one element per orbit
                    logits = sym.logits(logits, types - 1, num_atoms, diff.atom_types.mask_class)
                t_off, t_on = self.remask_window
                sigma = self.remask_rate * abs(dt) if self.remask_rate and t_off <= t_i <= t_on else 0.0
                if self.type_unmasking == "confidence":            # MaskGIT order (few_step.py)
                    x, x_mean = confidence_reveal_step(diff.atom_types, types - 1, logits, k_grid[i].to(device),
                                                       k_next[i].to(device), bidx, B, generator)
                elif sigma > 0.0:                                                 # ReMDM-style re-drawing
                    x, x_mean = diff.atom_types.remask_reverse_step(types - 1, logits, k_grid[i].to(device),
                                                                    k_next[i].to(device), sigma, generator)
                elif self.coherence_within_step and self.coherence_bias is not None and sym is None:
                    x, x_mean = coherent_reveal_step(diff.atom_types, types - 1, logits, self._beta(t_i),
                                                     k_grid[i].to(device), k_next[i].to(device), bidx, B, generator)
                else:
                    x, x_mean = diff.atom_types.reverse_step(types - 1, logits, k_grid[i].to(device),
                                                             k_next[i].to(device), generator)
                types, types_mean = x + 1, x_mean + 1
                if sym is not None:
                    types = sym.types(types, num_atoms)
            last = i + 1 == self.num_steps
            if sym is not None and (sym.active(max(s, 0.0)) or last):
                coords, lattice = sym.state(coords, lattice, num_atoms)
            if sym is not None and last:      # the result is the last step's means: only they need projecting
                types_mean = sym.types(types_mean, num_atoms)
                coords_mean, lattice_mean = sym.state(coords_mean, lattice_mean, num_atoms)
            if trajectory is not None and (i + 1) % record_every == 0 and i + 1 < self.num_steps:
                trajectory.record(i + 1, max(s, 0.0), types, coords, lattice, num_atoms)
            if step_callback is not None:
                step_callback(i + 1, self.num_steps)

        _check_finite(self.num_steps, self.num_steps, float(ts[-1]), "final predictor step", coords_mean, lattice_mean)
        result = CrystalBatch(types_mean, coords_mean, lattice_mean, num_atoms)
        if trajectory is None:
            return result
        trajectory.record(self.num_steps, 0.0, types_mean, coords_mean, lattice_mean, num_atoms)
        return result, trajectory
