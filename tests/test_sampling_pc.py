"""Sampler plumbing: determinism, classifier-free guidance, CSP, chunking, element masks, D3PM grid, N prior."""
import math

import pytest
import torch

from mattergen_kit.data import MASK_Z, CrystalBatch
from mattergen_kit.diffusion import CSP_FIELDS, CrystalDiffusion, DenoiserOutput
from mattergen_kit.diffusion.atom_types import MASK_CLASS, MaskDiffusion, continuous_to_discrete
from mattergen_kit.sampling import NumAtomsPrior, PredictorCorrectorSampler, combine_guidance
from test_sampling_oracle import MixtureOracle, rocksalt, zincblende

STEPS = 20


class GuidedOracle(torch.nn.Module):
    """Unconditional branch: mixture of rock salt + zinc blende; conditional branch: rock salt only."""

    def __init__(self, diff):
        super().__init__()
        self.uncond = MixtureOracle(diff, [rocksalt(5.64), zincblende(5.41)], [0.5, 0.5])
        self.cond = MixtureOracle(diff, [rocksalt(5.64)], [1.0])
        self.calls = []

    def forward(self, noisy, t, conditions=None, use_condition=None):
        self.calls.append((noisy.num_crystals, use_condition.clone(), conditions))
        u, c = self.uncond(noisy, t), self.cond(noisy, t)
        use_a = use_condition[noisy.batch_idx][:, None]
        return DenoiserOutput(torch.where(use_a, c.type_logits, u.type_logits),
                              torch.where(use_a, c.coord_score, u.coord_score),
                              torch.where(use_condition[:, None, None], c.lattice_score, u.lattice_score))


def same(a: CrystalBatch, b: CrystalBatch):
    return (torch.equal(a.atom_types, b.atom_types) and torch.equal(a.frac_coords, b.frac_coords)
            and torch.equal(a.lattice, b.lattice) and torch.equal(a.num_atoms, b.num_atoms))


def test_determinism_and_output_contract():
    diff = CrystalDiffusion()
    oracle = MixtureOracle(diff, [rocksalt(5.64), zincblende(5.41)], [0.5, 0.5])
    sampler = PredictorCorrectorSampler(diff, num_steps=STEPS)
    a = sampler.sample(oracle, torch.full((6,), 8), seed=7, progress=False)
    b = sampler.sample(oracle, torch.full((6,), 8), seed=7, progress=False)
    c = sampler.sample(oracle, torch.full((6,), 8), seed=8, progress=False)
    assert same(a, b) and not same(a, c)
    assert sampler.last_seed == 8
    assert not bool((a.atom_types == MASK_Z).any())
    assert float(a.frac_coords.min()) >= 0 and float(a.frac_coords.max()) < 1
    torch.testing.assert_close(a.lattice, a.lattice.transpose(1, 2))
    assert len(a.to_structures()) == 6


def test_model_mode_restored_and_no_grad():
    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)
            self.seen = set()

        def forward(self, noisy, t, conditions=None, use_condition=None):
            self.seen.add((self.training, torch.is_grad_enabled()))
            n = noisy.atom_types.shape[0]
            return DenoiserOutput(torch.zeros(n, 101), -0.1 * torch.ones(n, 3), -0.1 * torch.ones_like(noisy.lattice))

    m = Probe().train()
    PredictorCorrectorSampler(CrystalDiffusion(), num_steps=3).sample(m, [2, 3], seed=0, progress=False)
    assert m.seen == {(False, False)} and m.training


def test_guidance_zero_and_one_equal_single_branch_samplers():
    diff = CrystalDiffusion()
    sampler = PredictorCorrectorSampler(diff, num_steps=STEPS)
    N = torch.full((4,), 8)
    guided = GuidedOracle(diff)
    g0 = sampler.sample(guided, N, seed=3, guidance_scale=0.0, conditions={"label": 1.0}, progress=False)
    assert all(n == 4 and not bool(u.any()) for n, u, _ in guided.calls)
    u_only = sampler.sample(MixtureOracle(diff, [rocksalt(5.64), zincblende(5.41)], [0.5, 0.5]), N, seed=3,
                            progress=False)
    assert same(g0, u_only)

    guided.calls.clear()
    g1 = sampler.sample(guided, N, seed=3, guidance_scale=1.0, conditions={"label": 1.0}, progress=False)
    assert all(n == 4 and bool(u.all()) for n, u, _ in guided.calls)
    c_only = sampler.sample(MixtureOracle(diff, [rocksalt(5.64)], [1.0]), N, seed=3, progress=False)
    assert same(g1, c_only)
    # conditions arrive per crystal
    torch.testing.assert_close(guided.calls[0][2]["label"], torch.ones(4))

    guided.calls.clear()
    sampler.sample(guided, N, seed=3, guidance_scale=2.0, conditions={"label": 1.0, "chemical_system": "Na-Cl"},
                   progress=False)
    n, use, cond = guided.calls[0]
    assert n == 8 and use.tolist() == [False] * 4 + [True] * 4
    assert cond["chemical_system"] == ["Na-Cl"] * 8 and cond["label"].shape == (8,)
    with pytest.raises(ValueError):
        sampler.sample(guided, N, seed=3, guidance_scale=2.0, progress=False)


def test_guided_denoise_combines_outputs():
    diff = CrystalDiffusion()
    sampler = PredictorCorrectorSampler(diff, num_steps=STEPS)
    guided = GuidedOracle(diff)
    g = torch.Generator().manual_seed(0)
    noisy = CrystalBatch(torch.full((16,), MASK_Z), torch.rand(16, 3, generator=g),
                         5.5 * torch.eye(3).repeat(2, 1, 1), torch.tensor([8, 8]))
    t = torch.tensor([0.3, 0.3])
    cond = {"label": torch.ones(2)}
    out = sampler._denoise(guided, noisy, t, cond, 2.0, None)
    u = guided(noisy, t, cond, torch.zeros(2, dtype=torch.bool))
    c = guided(noisy, t, cond, torch.ones(2, dtype=torch.bool))
    ref = combine_guidance(u, c, 2.0)
    torch.testing.assert_close(out.coord_score, ref.coord_score)
    torch.testing.assert_close(out.lattice_score, ref.lattice_score)
    torch.testing.assert_close(out.coord_score, 2 * c.coord_score - u.coord_score)
    allowed = out.type_logits > -1e9
    torch.testing.assert_close(out.type_logits[allowed], ref.type_logits[allowed])
    assert not bool(allowed[:, MASK_CLASS].any())


def test_csp_chunking_and_allowed_elements():
    diff = CrystalDiffusion(fields=CSP_FIELDS)
    oracle = MixtureOracle(diff, [rocksalt(5.64)], [1.0])
    sampler = PredictorCorrectorSampler(diff, num_steps=STEPS)
    comps = [["Na"] * 4 + ["Cl"] * 4] * 5
    out = sampler.sample(oracle, None, seed=0, fixed_atom_types=comps, batch_size=2, progress=False)
    assert out.num_crystals == 5 and out.atom_types.tolist() == [11] * 4 * 0 + ([11] * 4 + [17] * 4) * 5
    with pytest.raises(ValueError):
        sampler.sample(oracle, [8], seed=0, progress=False)  # CSP needs atom types

    # de novo with an element restriction: the oracle wants Na/Cl, but only O and Li are allowed
    diff2 = CrystalDiffusion()
    oracle2 = MixtureOracle(diff2, [rocksalt(5.64)], [1.0])
    out2 = PredictorCorrectorSampler(diff2, num_steps=STEPS).sample(
        oracle2, [8, 8], seed=0, allowed_elements=["Li", 8], progress=False)
    assert set(out2.atom_types.tolist()) <= {3, 8}


def test_d3pm_jump_chain_keeps_the_forward_marginals():
    """On a coarse grid (as the sampler uses it), the reverse chain with the exact x0 visits the
    forward marginals: after step i the mask fraction is k'_i / T."""
    d = MaskDiffusion()
    n = 5_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 83, (n,), generator=g)
    logits = torch.full((n, 101), -1e4).scatter(1, x0[:, None], 0.0)
    ts = torch.linspace(1.0, 1e-3, 37, dtype=torch.float64)
    k = continuous_to_discrete(ts) + 1
    k_next = torch.cat([k[1:], torch.zeros(1, dtype=torch.long)])
    x = torch.full((n,), MASK_CLASS)
    for i in range(len(ts)):
        x, mean = d.reverse_step(x, logits, k[i], k_next[i], g)
        p = float(k_next[i]) / 1000
        frac = float((x == MASK_CLASS).double().mean())
        assert abs(frac - p) < 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9, (i, frac, p)
        revealed = x != MASK_CLASS
        assert torch.equal(x[revealed], x0[revealed])
    assert torch.equal(mean, x0)


def test_num_atoms_prior():
    prior = NumAtomsPrior.alex_mp_20()
    assert prior.max_atoms == 20 and math.isclose(float(prior.probs.sum()), 1.0, rel_tol=1e-9)
    s = prior.sample(50_000, torch.Generator().manual_seed(0))
    assert s.dtype == torch.long and int(s.min()) >= 1 and int(s.max()) <= 20
    freq = torch.bincount(s, minlength=21).double() / s.numel()
    assert float((freq - prior.probs).abs().max()) < 0.006
    assert torch.equal(s[:10], prior.sample(50_000, torch.Generator().manual_seed(0))[:10])
    custom = NumAtomsPrior([0, 0, 1, 0, 3])
    assert set(custom.sample(1000, torch.Generator().manual_seed(1)).tolist()) == {2, 4}
    with pytest.raises(ValueError):
        NumAtomsPrior([0.5, 0.5])


class UniformTypes(torch.nn.Module):
    """Every element equally likely for every atom (zero logits); zero scores: only the type reveals matter."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, noisy, t, conditions=None, use_condition=None):
        n, B = noisy.atom_types.shape[0], noisy.num_crystals
        return DenoiserOutput(torch.zeros(n, 101), torch.zeros(n, 3), torch.zeros(B, 3, 3))


def test_coherence_bias_zero_is_the_reference_and_large_bias_reuses_elements():
    diff, model, n = CrystalDiffusion(), UniformTypes(), torch.full((24,), 8)
    plain = PredictorCorrectorSampler(diff, num_steps=STEPS).sample(model, n, seed=3, progress=False)
    zero = PredictorCorrectorSampler(diff, num_steps=STEPS, coherence_bias=([0.0, 1.0], [0.0, 0.0]))
    assert same(plain, zero.sample(model, n, seed=3, progress=False))
    strong = PredictorCorrectorSampler(diff, num_steps=STEPS, coherence_bias=([0.0, 1.0], [8.0, 8.0]))
    biased = strong.sample(model, n, seed=3, progress=False)

    def distinct(batch):
        return [len(set(c.atom_types.tolist())) for c in batch.split()]

    # uniform over 76 elements: ~7 distinct elements among 8 atoms; with e^8 ≈ 3000× on the cell's own
    # elements, atoms revealed after the first reuse them (several reveal together in 20 steps, so not 1)
    assert sum(distinct(plain)) / 24 > 6 and sum(distinct(biased)) / 24 < 3.5


def test_coherence_bias_is_checked():
    with pytest.raises(ValueError, match="increasing t"):
        PredictorCorrectorSampler(CrystalDiffusion(), coherence_bias=([0.5, 0.2], [1.0, 1.0]))


def test_non_finite_predictions_stop_sampling_with_a_clear_error(monkeypatch):
    """NaN/inf predictions (an untrained or diverged model) stop the sampler at the step where they appear with a
    NonFiniteSampleError naming the step and the field, not torch's LinAlgError from the lattice's polar factor
    (NaN lattice score) or crystals with NaN coordinates (inf coordinate score); a normal model still samples."""
    import copy

    import numpy as np

    import mattergen_kit as mk
    from mattergen_kit.sampling import NonFiniteSampleError

    model = mk.load_model()                                      # the bundled model: real weights
    crystals = model.generate(2, seed=0, steps=3, progress=False)
    assert len(crystals) == 2 and all(np.isfinite(s.lattice.matrix).all() and np.isfinite(s.frac_coords).all()
                                      for s in crystals)

    nan_model = copy.deepcopy(model)
    with torch.no_grad():
        nan_model.denoiser.lattice_head[-1].weight.fill_(float("nan"))  # the lattice head's final layer
    with pytest.raises(NonFiniteSampleError, match=r"step 1/3 .*predicted lattice score is not finite") as err:
        nan_model.generate(2, seed=0, steps=3, progress=False)
    assert "untrained or diverged; train it longer / check the checkpoint" in str(err.value)
    assert isinstance(err.value, RuntimeError) and err.value.step == 1

    inf_model = copy.deepcopy(model)
    forward, calls = inf_model.denoiser.forward, []

    def inf_from_second_step(*args, **kwargs):                   # 2 network calls per step: call 3 is step 2's
        out = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) >= 3:
            out = DenoiserOutput(out.type_logits, torch.full_like(out.coord_score, float("inf")), out.lattice_score)
        return out

    monkeypatch.setattr(inf_model.denoiser, "forward", inf_from_second_step)
    with pytest.raises(NonFiniteSampleError, match=r"step 2/3 .*corrector.*predicted coordinate score") as err:
        inf_model.generate(2, seed=0, steps=3, progress=False)
    assert err.value.field == "predicted coordinate score" and len(calls) == 3


def test_remasking_zero_is_the_reference_and_remasking_changes_early_reveals():
    diff, model, n = CrystalDiffusion(), UniformTypes(), torch.full((16,), 8)
    plain = PredictorCorrectorSampler(diff, num_steps=STEPS).sample(model, n, seed=3, progress=False)
    off = PredictorCorrectorSampler(diff, num_steps=STEPS, remask_rate=0.0, remask_window=(0.2, 0.9))
    assert same(plain, off.sample(model, n, seed=3, progress=False))
    on = PredictorCorrectorSampler(diff, num_steps=STEPS, remask_rate=8.0).sample(model, n, seed=3, progress=False)
    assert not bool((on.atom_types == MASK_Z).any())               # every atom revealed at the end
    assert not torch.equal(on.atom_types, plain.atom_types)
    with pytest.raises(ValueError, match="remask_rate"):
        PredictorCorrectorSampler(diff, remask_rate=-1.0)
    with pytest.raises(ValueError, match="remask_window"):
        PredictorCorrectorSampler(diff, remask_rate=1.0, remask_window=(0.6, 0.2))
