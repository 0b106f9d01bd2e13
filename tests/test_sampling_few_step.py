"""Few-step sampler options (issue 21): the default path is the reference sampler bit for bit, the ρ time grid,
Tweedie's final denoising step on a known distribution, probability-flow (DDIM / 2M) steps, the NFE count."""
import math

import pytest
import torch

from mattergen_kit.data import MASK_Z, CrystalBatch
from mattergen_kit.diffusion import CrystalDiffusion
from mattergen_kit.diffusion.atom_types import continuous_to_discrete
from mattergen_kit.sampling import PredictorCorrectorSampler
from mattergen_kit.sampling.few_step import coords_ode_step, lattice_ode_step, periodic_difference, rho_time_grid
from test_sampling_oracle import MixtureOracle, match, rocksalt, zincblende


def reference_loop(diff, model, num_atoms, seed, num_steps):
    """MatterGen's predictor–corrector loop written out from the diffusion modules' steps (module doc of
    pc_sampler.py): linear grid, one Langevin corrector call and one ancestral predictor call per step."""
    g = torch.Generator().manual_seed(seed)
    B = len(num_atoms)
    bidx = torch.repeat_interleave(torch.arange(B), num_atoms)
    types = torch.full((int(num_atoms.sum()),), MASK_Z)
    coords, lattice = diff.coords.sample_prior(num_atoms, g), diff.lattice.sample_prior(num_atoms, g)
    ts = torch.linspace(1.0, 1e-3, num_steps, dtype=torch.float64)
    dt = -(1.0 - 1e-3) / (num_steps - 1)
    k = continuous_to_discrete(ts) + 1
    k_next = torch.cat([k[1:], torch.zeros(1, dtype=torch.long)])
    use = torch.zeros(B, dtype=torch.bool)
    for i in range(num_steps):
        t = torch.full((B,), float(ts[i]))
        sig, std = diff.coords.sigma(t, num_atoms)[bidx], diff.lattice.std(t, num_atoms)[:, None, None]
        out = model(CrystalBatch(types, coords, lattice, num_atoms), t, use_condition=use)
        coords, _ = diff.coords.corrector_step(coords, out.coord_score / sig[:, None], bidx, B, 0.4, g)
        lattice, _ = diff.lattice.corrector_step(lattice, out.lattice_score / std, t, dt, 0.2, g)
        out = model(CrystalBatch(types, coords, lattice, num_atoms), t, use_condition=use)
        s = float(ts[i]) + dt
        s_vec = torch.full((B,), s)
        sig_s = diff.coords.sigma(s_vec, num_atoms)[bidx] if s > 0 else torch.zeros_like(sig)
        coords, f_mean = diff.coords.predictor_step(coords, out.coord_score / sig[:, None], sig, sig_s, g)
        lattice, l_mean = diff.lattice.predictor_step(lattice, out.lattice_score / std, t, s_vec, num_atoms, g)
        logits = out.type_logits.masked_fill(torch.arange(101) >= 100, -1e10)       # the mask class is never drawn
        x, x_mean = diff.atom_types.reverse_step(types - 1, logits, k[i], k_next[i], g)
        types, t_mean = x + 1, x_mean + 1
    return t_mean, f_mean, l_mean


def test_default_options_are_the_reference_sampler_bit_for_bit():
    diff = CrystalDiffusion()
    oracle = MixtureOracle(diff, [rocksalt(5.64), zincblende(5.41)], [0.5, 0.5])
    num_atoms = torch.full((5,), 8)
    types, coords, lattice = reference_loop(diff, oracle, num_atoms, seed=11, num_steps=12)
    sampler = PredictorCorrectorSampler(diff, num_steps=12)
    out = sampler.sample(oracle, num_atoms, seed=11, progress=False)
    assert torch.equal(out.atom_types, types) and torch.equal(out.frac_coords, coords)
    assert torch.equal(out.lattice, lattice)
    assert sampler.network_calls() == 24
    explicit = PredictorCorrectorSampler(diff, num_steps=12, grid_rho=1.0, corrector_t_max=1.0,
                                         continuous_update="ancestral").sample(oracle, num_atoms, seed=11,
                                                                               progress=False)
    assert torch.equal(explicit.frac_coords, coords) and torch.equal(explicit.lattice, lattice)


def test_rho_grid_shape_ends_and_density_at_small_t():
    linear = rho_time_grid(50, 1e-3, 1.0)
    torch.testing.assert_close(linear, torch.linspace(1.0, 1e-3, 50, dtype=torch.float64), rtol=0, atol=1e-12)
    for rho in (2.0, 3.0, 7.0):
        grid = rho_time_grid(50, 1e-3, rho)
        assert grid.shape == (50,) and grid.dtype == torch.float64
        assert float(grid[0]) == 1.0 and math.isclose(float(grid[-1]), 1e-3, rel_tol=1e-12)
        steps = grid[:-1] - grid[1:]
        assert bool((steps > 0).all())                               # strictly decreasing
        assert bool((steps[1:] < steps[:-1]).all())                  # the steps shrink toward t = ε
        u = torch.tensor(0.3, dtype=torch.float64)                   # t_i = (1 + u (ε^{1/ρ} − 1))^ρ at u = i/(n−1)
        i = round(0.3 * 49)
        expect = (1 + (i / 49) * (1e-3 ** (1 / rho) - 1)) ** rho
        assert math.isclose(float(grid[i]), expect, rel_tol=1e-12) and u > 0
    dense = rho_time_grid(50, 1e-3, 3.0)
    assert int((dense < 0.1).sum()) > int((linear < 0.1).sum())      # more steps where the fine geometry forms
    sampler = PredictorCorrectorSampler(CrystalDiffusion(), num_steps=50, grid_rho=3.0, corrector_t_max=0.5)
    torch.testing.assert_close(sampler.timesteps(), dense)
    assert sampler.network_calls() == 50 + int((dense <= 0.5).sum())
    with pytest.raises(ValueError, match="grid_rho"):
        PredictorCorrectorSampler(CrystalDiffusion(), grid_rho=0.0)
    with pytest.raises(ValueError, match="continuous_update"):
        PredictorCorrectorSampler(CrystalDiffusion(), continuous_update="heun")


def test_final_step_is_tweedie_on_a_point_mass():
    """Data = one crystal: q(f_t | f_0) is a wrapped normal around f_0 and q(L_t | L_0) a Gaussian around
    α L_0 + (1 − α) μ_N, so the exact scores are known; a step to s = 0 returns Tweedie's x̂_0 = f_0, L_0 exactly,
    and a DDIM step t → s lands on f_0 + (σ_s/σ_t)(f_t − f_0) (its own marginal's point)."""
    diff = CrystalDiffusion()
    g = torch.Generator().manual_seed(0)
    target = CrystalBatch.from_structures([rocksalt(5.64)])
    N = target.num_atoms
    f0, L0 = target.frac_coords.double(), target.lattice.double()
    t = torch.tensor([0.2])
    sigma_t = diff.coords.sigma(t, N).double().expand(8)
    f_t = f0 + sigma_t[:, None] * torch.randn(f0.shape, generator=g, dtype=torch.float64)   # unwrapped displacement
    score_f = -(f_t - f0) / sigma_t[:, None] ** 2                    # the Gaussian score (σ ≪ 1: no image competes)
    x, x0 = coords_ode_step(f_t % 1.0, score_f, sigma_t, torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(x, f0 % 1.0, rtol=0, atol=1e-12)
    sigma_s = diff.coords.sigma(torch.tensor([0.1]), N).double().expand(8)
    x, _ = coords_ode_step(f_t, score_f, sigma_t, sigma_s)
    expect = f0 + (sigma_s / sigma_t)[:, None] * (f_t - f0)
    torch.testing.assert_close(periodic_difference(x, expect), torch.zeros_like(x), rtol=0, atol=1e-12)

    mean, std = diff.lattice.marginal(L0, t.double(), N)
    L_t = mean + std[:, None, None] * torch.randn(L0.shape, generator=g, dtype=torch.float64)
    score_L = -(L_t - mean) / std[:, None, None] ** 2
    mu, a_t = diff.lattice.limit_mean(N).double(), diff.lattice.alpha(t).double()
    L_s, y0 = lattice_ode_step(L_t, score_L, mu, a_t, torch.ones(1, dtype=torch.float64), std,
                               torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(L_s, L0, rtol=0, atol=1e-6)          # α(t) is float32 in LatticeVPSDE
    torch.testing.assert_close(y0, L0 - mu, rtol=0, atol=1e-6)
    # 2M with the same estimate twice is DDIM (the correction term vanishes)
    x_a, _ = coords_ode_step(f_t, score_f, sigma_t, sigma_s)
    x_b, _ = coords_ode_step(f_t, score_f, sigma_t, sigma_s, x0_prev=f0 + 3.0, r=0.7)   # f0 + 3: same on the torus
    torch.testing.assert_close(x_a, x_b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("options", [dict(continuous_update="ode"),
                                     dict(continuous_update="ode2m", grid_rho=2.0),
                                     dict(continuous_update="ode2m", grid_rho=2.0, n_corrector_steps=0),
                                     dict(continuous_update="ode2m", type_unmasking="confidence"),
                                     dict(continuous_update="ode2m", coherence_bias=([0.0, 1.0], [1.0, 1.0]),
                                          coherence_within_step=True, coherence_scale=1.5)])
def test_probability_flow_samplers_recover_a_two_crystal_mixture(options):
    """Exact scores of NaCl rock salt vs ZnS zinc blende: every sample has the geometry of one of the two crystals
    (coordinates and lattice), ≥ 90 % also its atom types (atoms revealed in the same step are drawn independently,
    so a rare sample mixes the two components' elements, as with the reference sampler), and both occur."""
    diff = CrystalDiffusion()
    A, Bz = rocksalt(5.64), zincblende(5.41)
    oracle = MixtureOracle(diff, [A, Bz], [0.5, 0.5])
    sampler = PredictorCorrectorSampler(diff, num_steps=100, **options)
    out = sampler.sample(oracle, torch.full((24,), 8), seed=4, progress=False)
    assert bool((match(out, A, check_types=False) | match(out, Bz, check_types=False)).all())
    okA, okB = match(out, A), match(out, Bz)
    assert float((okA | okB).double().mean()) >= 0.9, (okA, okB)
    assert int(okA.sum()) >= 3 and int(okB.sum()) >= 3
    assert len(oracle.calls) == sampler.network_calls()


def test_confidence_unmasking_reveals_the_reference_count_most_confident_first():
    """One crystal of 6 masked atoms; x̂_0 puts ≈ 1 on Na for atoms 0-2 and is flat over 76 elements for 3-5:
    the revealed atoms are the confident ones, and how many are revealed per step follows the reference's
    Binomial(masked, p_reveal) (mean over draws)."""
    from mattergen_kit.diffusion.atom_types import mask_logits
    from mattergen_kit.sampling.few_step import confidence_reveal_step

    diff = CrystalDiffusion()
    types_model = diff.atom_types
    x_k = torch.full((6,), types_model.mask_class)
    logits = torch.zeros(6, 101)
    logits[:3, 10] = 30.0                                               # Na (Z = 11): p ≈ 1 − 1e−11 after masking
    logits = mask_logits(logits)
    bidx = torch.zeros(6, dtype=torch.long)
    k, k_prev = torch.tensor(600), torch.tensor(400)                    # p_reveal = (ᾱ_400 − ᾱ_600)/(1 − ᾱ_600) = 1/3
    g = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(400):
        sample, mean = confidence_reveal_step(types_model, x_k, logits, k, k_prev, bidx, 1, g)
        revealed = sample != types_model.mask_class
        n = int(revealed.sum())
        counts.append(n)
        confident_first = revealed[:3].sum() == min(n, 3)
        assert bool(confident_first) and bool((sample[:3][revealed[:3]] == 10).all())
    assert abs(sum(counts) / len(counts) - 2.0) < 0.2                  # E[Binomial(6, 1/3)] = 2 (sd of the mean 0.06)
    # the last step (k' = 0) reveals every atom
    sample, _ = confidence_reveal_step(types_model, x_k, logits, torch.tensor(5), torch.tensor(0), bidx, 1, g)
    assert not bool((sample == types_model.mask_class).any())


def test_coherent_reveals_keep_the_reference_count_and_share_elements_within_a_step():
    """coherent_reveal_step: how many atoms a step reveals is the reference's Binomial(masked, p_reveal); with one
    reveal the class law is softmax(logits); atoms revealed in the same step see each other's elements (a large β
    makes a cell of atoms revealed together single-element, where independent draws over two equally likely
    elements mix them); atoms revealed before the step never change."""
    from mattergen_kit.diffusion.atom_types import mask_logits
    from mattergen_kit.sampling.few_step import coherent_reveal_step

    types_model = CrystalDiffusion().atom_types
    m = types_model.mask_class
    g = torch.Generator().manual_seed(0)
    keep = torch.zeros(101, dtype=torch.bool)
    keep[[10, 16]] = True
    logits = mask_logits(torch.zeros(6, 101), keep)                    # Na, Cl equally likely, nothing else
    one_crystal = torch.zeros(6, dtype=torch.long)
    x_k = torch.full((6,), m)
    counts = []
    for _ in range(300):                                               # p_reveal = 1/3 for k = 600 → k' = 400
        sample, _ = coherent_reveal_step(types_model, x_k, logits, 0.0, torch.tensor(600), torch.tensor(400),
                                         one_crystal, 1, g)
        counts.append(int((sample != m).sum()))
    assert abs(sum(counts) / len(counts) - 2.0) < 0.25                 # E[Binomial(6, 1/3)] = 2 (sd of mean 0.07)

    def mixed_share(beta):                                             # all 6 revealed in one step (k' = 0)
        mixed = 0
        for _ in range(200):
            sample, _ = coherent_reveal_step(types_model, x_k, logits, beta, torch.tensor(5), torch.tensor(0),
                                             one_crystal, 1, g)
            assert not bool((sample == m).any()) and bool(((sample == 10) | (sample == 16)).all())
            mixed += len(set(sample.tolist())) > 1
        return mixed / 200
    assert mixed_share(0.0) > 0.9                                      # independent: 1 − 2·2⁻⁶ = 0.97 mixed
    assert mixed_share(20.0) < 0.05                                    # coherent within the step
    # two crystals: the bias only counts elements drawn in the atom's own crystal
    two = torch.tensor([0, 0, 0, 1, 1, 1])
    sample, _ = coherent_reveal_step(types_model, x_k, logits, 20.0, torch.tensor(5), torch.tensor(0), two, 2, g)
    assert len(set(sample[:3].tolist())) == 1 and len(set(sample[3:].tolist())) == 1
    # one masked atom: the class law is softmax(logits); the revealed atom (K, class 18) stays
    law = torch.zeros(2, 101)
    law[1, 10], law[1, 16] = math.log(3.0), 0.0                         # Na : Cl = 3 : 1 (others masked out)
    law = mask_logits(law, keep)
    x = torch.tensor([18, m])
    draws = [coherent_reveal_step(types_model, x, law, 5.0, torch.tensor(3), torch.tensor(0),
                                  torch.zeros(2, dtype=torch.long), 1, g)[0] for _ in range(400)]
    assert all(int(d[0]) == 18 for d in draws)
    assert abs(sum(int(d[1]) == 10 for d in draws) / 400 - 0.75) < 0.07
    with pytest.raises(ValueError, match="coherence_within_step"):
        PredictorCorrectorSampler(CrystalDiffusion(), coherence_within_step=True, type_unmasking="confidence")
    with pytest.raises(ValueError, match="coherence_scale"):
        PredictorCorrectorSampler(CrystalDiffusion(), coherence_scale=-1.0)
    scaled = PredictorCorrectorSampler(CrystalDiffusion(), coherence_bias=([0.0, 1.0], [2.0, 0.0]),
                                       coherence_scale=1.5)
    assert math.isclose(scaled._beta(0.25), 1.5 * 1.5)                 # s · β(t), β linear in t


def test_bfloat16_network_calls_stay_close_to_float32():
    """The shipped model called under bf16 autocast: float32 outputs within a few % of the float32 call."""
    import mattergen_kit as mk

    model = mk.load_model()
    num_atoms = torch.tensor([4, 8, 12])
    g = torch.Generator().manual_seed(0)
    diff = model.diffusion
    noisy = CrystalBatch(torch.full((24,), MASK_Z), diff.coords.sample_prior(num_atoms, g),
                         diff.lattice.sample_prior(num_atoms, g), num_atoms)
    t = torch.full((3,), 0.3)
    outs = [PredictorCorrectorSampler(diff, network_bfloat16=bf16)._denoise(model.denoiser, noisy, t, None, 0.0, None)
            for bf16 in (False, True)]
    for field in ("coord_score", "lattice_score", "type_logits"):
        a, b = getattr(outs[0], field), getattr(outs[1], field)
        assert b.dtype == torch.float32
        if field == "type_logits":                                       # masked classes are −1e10 in both
            keep = a > -1e9
            a, b = a[keep], b[keep]
        assert float((a - b).norm() / a.norm()) < 0.05, field


def test_noise_scale_one_is_the_reference_step_and_zero_keeps_only_the_drift():
    from mattergen_kit.sampling.few_step import (coords_corrector_scaled, coords_predictor_scaled,
                                                 lattice_corrector_scaled, lattice_predictor_scaled)

    diff = CrystalDiffusion()
    batch = CrystalBatch.from_structures([rocksalt(5.64), zincblende(5.41)])
    num_atoms, bidx = batch.num_atoms, batch.batch_idx
    t, s = torch.full((2,), 0.4), torch.full((2,), 0.35)
    sig_t, sig_s = diff.coords.sigma(t, num_atoms)[bidx], diff.coords.sigma(s, num_atoms)[bidx]
    g = torch.Generator().manual_seed(0)
    score_f = torch.randn(batch.frac_coords.shape, generator=g)
    score_L = torch.randn(batch.lattice.shape, generator=g)
    score_L = score_L + score_L.transpose(1, 2)
    f, L = batch.frac_coords, batch.lattice

    def pair(ref, new):
        a = ref(torch.Generator().manual_seed(5))
        b = new(torch.Generator().manual_seed(5))
        return a, b

    a, b = pair(lambda g: diff.coords.predictor_step(f, score_f, sig_t, sig_s, g),
                lambda g: coords_predictor_scaled(f, score_f, sig_t, sig_s, 1.0, g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    a, b = pair(lambda g: diff.coords.corrector_step(f, score_f, bidx, 2, 0.4, g),
                lambda g: coords_corrector_scaled(f, score_f, bidx, 2, 0.4, 1.0, g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    a, b = pair(lambda g: diff.lattice.predictor_step(L, score_L, t, s, num_atoms, g),
                lambda g: lattice_predictor_scaled(diff.lattice, L, score_L, t, s, num_atoms, 1.0, g))
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)          # mean + 1·(sample − mean): round-off only
    assert torch.equal(a[1], b[1])
    a, b = pair(lambda g: diff.lattice.corrector_step(L, score_L, t, -0.05, 0.2, g),
                lambda g: lattice_corrector_scaled(diff.lattice, L, score_L, t, -0.05, 0.2, 1.0, g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # η = 0: the sample is the step's mean (no random term)
    for sample, mean in (coords_predictor_scaled(f, score_f, sig_t, sig_s, 0.0, g),
                         coords_corrector_scaled(f, score_f, bidx, 2, 0.4, 0.0, g),
                         lattice_predictor_scaled(diff.lattice, L, score_L, t, s, num_atoms, 0.0, g),
                         lattice_corrector_scaled(diff.lattice, L, score_L, t, -0.05, 0.2, 0.0, g)):
        torch.testing.assert_close(sample, mean, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="noise_scale"):
        PredictorCorrectorSampler(diff, noise_scale=1.5)


def test_default_request_is_the_few_step_sampler_and_steps_1000_the_reference():
    """generate()'s default (no steps, unconditional): FAST_STEPS steps of FAST_SAMPLER; ``steps=1000`` (or any
    explicit steps) keeps MatterGen's reference sampler, exactly as PredictorCorrectorSampler's defaults."""
    import mattergen_kit as mk
    from mattergen_kit.sampling.few_step import FAST_SAMPLER, FAST_STEPS, fast_bfloat16, fast_sampler_options
    from mattergen_kit.sampling.request import SamplingRequest

    model = mk.load_model()
    fast = SamplingRequest(4, seed=0).resolve(model)
    assert fast.steps == FAST_STEPS and fast.request.sampler == "fast"
    assert {k: fast.sampler_options[k] for k in FAST_SAMPLER} == fast_sampler_options("cpu")
    assert fast_sampler_options("cpu")["network_bfloat16"] == fast_bfloat16("cpu")  # bf16 only where the CPU has it
    for n in (FAST_STEPS, 50):   # the budget: ≤ 2 network calls per step (correctors included)
        assert PredictorCorrectorSampler(model.diffusion, num_steps=n, **fast.sampler_options).network_calls() == 2 * n
    ref = SamplingRequest(4, seed=0, steps=1000).resolve(model)
    assert ref.steps == 1000 and ref.request.sampler == "reference"
    assert not set(FAST_SAMPLER) & set(ref.sampler_options)
    explicit = SamplingRequest(4, seed=0, steps=50, sampler="fast").resolve(model)
    assert explicit.steps == 50 and explicit.sampler_options["continuous_update"] == "ode2m"
    with pytest.raises(ValueError, match="sampler"):
        SamplingRequest(4, sampler="turbo").resolve(model)
    # the reference request samples exactly what PredictorCorrectorSampler's defaults sample
    a = model.sample(2, seed=3, steps=4, progress=False)
    sampler = PredictorCorrectorSampler(model.diffusion, num_steps=4, **ref.sampler_options)
    resolved = SamplingRequest(2, seed=3, steps=4).resolve(model)
    b = sampler.sample(model.denoiser, resolved.num_atoms, seed=resolved.base_seed, progress=False)
    assert torch.equal(a.frac_coords, b.frac_coords) and torch.equal(a.lattice, b.lattice)


def test_a_steered_request_gets_the_corrector_at_full_noise():
    """Guided conditions or Wyckoff templates with the few-step sampler: FAST_SAMPLER_STEERED (η = 1), at which
    guidance kept its strength (issue 21's measurements); an unsteered request (no conditions, or γ = 0) keeps
    FAST_SAMPLER's η = 0.7. Both make the same 2 network calls per step."""
    import warnings

    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT, load_model
    from mattergen_kit.sampling.few_step import FAST_SAMPLER, FAST_SAMPLER_STEERED
    from mattergen_kit.sampling.request import SamplingRequest

    model = load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    assert FAST_SAMPLER_STEERED["noise_scale"] == 1.0 and FAST_SAMPLER["noise_scale"] == 0.7
    assert {k: v for k, v in FAST_SAMPLER_STEERED.items() if k != "noise_scale"} == \
        {k: v for k, v in FAST_SAMPLER.items() if k != "noise_scale"}
    noise = lambda **kw: SamplingRequest(4, seed=0, sampler="fast", **kw).resolve(model).sampler_options["noise_scale"]  # noqa: E731
    assert noise() == 0.7
    assert noise(conditions={"band_gap": 2.0}) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # γ = 0 with conditions warns: they are not used
        assert noise(conditions={"band_gap": 2.0}, guidance_scale=0.0) == 0.7
        assert noise(conditions={"space_group": 225}, enforce_symmetry=True, guidance_scale=0.0) == 1.0
