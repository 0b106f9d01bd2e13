"""Oracle denoisers: the sampler, fed the EXACT scores of a known distribution, must reproduce it.

The oracle knows a finite mixture of crystals (same N, fixed atom order) with weights π_j. At time t
the exact posterior over mixture components is

    w_j ∝ π_j · Π_atoms WN(f_t; f_j, σ_t²) · N(L_t; α L_j + (1−α) μ_N, std_t²) (6 symmetric entries)
              · Π_atoms [x_t = mask or x_t = c_j]

and the exact outputs are the posterior-weighted σ·score (coords), std·score (lattice) and
x0-probabilities Σ_j w_j onehot(c_j) (types). Written here independently of mattergen_kit.diffusion.coords.
"""
import math

import pytest
import torch
from pymatgen.core import Lattice, Structure

from mattergen_kit.data import CrystalBatch
from mattergen_kit.diffusion import CSP_FIELDS, CrystalDiffusion, DenoiserOutput
from mattergen_kit.sampling import PredictorCorrectorSampler


def rocksalt(a, species=("Na", "Cl")):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def zincblende(a, species=("Zn", "S")):
    return Structure.from_spacegroup("F-43m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.25, 0.25, 0.25]])


class MixtureOracle(torch.nn.Module):
    def __init__(self, diffusion: CrystalDiffusion, structures, weights):
        super().__init__()
        b = CrystalBatch.from_structures(structures)
        assert len(set(b.num_atoms.tolist())) == 1
        self.N = int(b.num_atoms[0])
        J = len(structures)
        self.diffusion = diffusion
        self.register_buffer("types", b.atom_types.view(J, self.N))                 # Z
        self.register_buffer("coords", b.frac_coords.double().view(J, self.N, 3))
        self.register_buffer("lattices", b.lattice.double())
        self.register_buffer("log_pi", torch.log(torch.tensor(weights, dtype=torch.float64)))
        self.calls = []

    def forward(self, noisy, t, conditions=None, use_condition=None):
        self.calls.append((noisy.num_crystals, None if use_condition is None else use_condition.clone()))
        B, N = noisy.num_crystals, self.N
        assert bool((noisy.num_atoms == N).all())
        f = noisy.frac_coords.double().view(B, 1, N, 3)
        L = noisy.lattice.double().view(B, 1, 3, 3)
        x = noisy.atom_types.view(B, 1, N)
        t64 = t.double()
        # coordinates: wrapped normal around every component (±2 images of the wrapped Δ: exact to
        # float precision for σ < 0.6; beyond, the density is nearly flat and the scores are ≈ 0 anyway)
        sig = (0.01 * 500.0 ** t64 * N ** (-1 / 3)).view(B, 1, 1, 1, 1)
        delta = f - self.coords[None]                                                  # (B, J, N, 3)
        delta = delta - torch.round(delta)
        d = delta[..., None] + torch.arange(-2, 3, dtype=torch.float64)                # (B, J, N, 3, 5)
        logk = -d ** 2 / (2 * sig ** 2)
        ll_coords = torch.logsumexp(logk, -1).sum((-1, -2))                            # (B, J)
        w_img = torch.softmax(logk, -1)
        coord_out = -(w_img * d).sum(-1) / sig[..., 0]                                 # σ·score, (B, J, N, 3)
        # lattice: Gaussian around α L_j + (1 − α) μ_N on the 6 independent entries
        a = torch.exp(-0.25 * t64 ** 2 * 19.9 - 0.05 * t64).view(B, 1, 1, 1)
        mu = (N / self.diffusion.lattice.density) ** (1 / 3) * torch.eye(3, dtype=torch.float64)
        std = torch.sqrt((1 - a ** 2) * 0.25 * N ** (2 / 3))
        m = a * self.lattices[None] + (1 - a) * mu
        r = (L - m) / std                                                               # (B, J, 3, 3)
        iu = torch.triu_indices(3, 3)
        ll_lat = -0.5 * (r[..., iu[0], iu[1]] ** 2).sum(-1)
        lattice_out = -r
        # types: a revealed atom must agree with the component
        # (−1e4 per mismatch rather than −inf: atoms revealed in the same sampler step are drawn
        # independently, so a rare sample can hold types of two components; it then follows the closer one)
        mismatches = ((x != 101) & (x != self.types[None])).sum(-1)                     # (B, J)
        logw = self.log_pi + ll_coords + ll_lat - 1e4 * mismatches
        w = torch.softmax(logw, -1)                                                     # (B, J)
        coord_score = (w[..., None, None] * coord_out).sum(1).reshape(B * N, 3)
        lattice_score = (w[..., None, None] * lattice_out).sum(1)
        onehot = torch.nn.functional.one_hot(self.types - 1, 101).float()               # (J, N, 101)
        probs = (w.float()[..., None, None] * onehot[None]).sum(1).reshape(B * N, 101)
        logits = torch.log(probs + 1e-30)
        return DenoiserOutput(logits, coord_score.float(), lattice_score.float())


def match(batch: CrystalBatch, structure: Structure, check_types=True):
    """Per crystal: (coords within 0.05 modulo a global translation) ∧ (lattice within 2 %) ∧ types."""
    ref = CrystalBatch.from_structures([structure])
    N = int(ref.num_atoms[0])
    B = batch.num_crystals
    f = batch.frac_coords.double().view(B, N, 3)
    d = f - ref.frac_coords.double()[None]
    d = d - torch.round(d)
    ang = 2 * math.pi * d                                                     # remove the circular-mean translation
    shift = torch.atan2(torch.sin(ang).mean(1), torch.cos(ang).mean(1)) / (2 * math.pi)
    d = d - shift[:, None, :]
    d = d - torch.round(d)
    ok_coords = d.abs().amax((1, 2)) < 0.05
    rel = torch.linalg.norm(batch.lattice.double() - ref.lattice.double(), dim=(1, 2)) / torch.linalg.norm(ref.lattice[0].double())
    ok_lat = rel < 0.02
    ok = ok_coords & ok_lat
    if check_types:
        ok &= (batch.atom_types.view(B, N) == ref.atom_types[None]).all(-1)
    return ok


def test_recovers_single_rocksalt_exact_1000_step_path():
    diff = CrystalDiffusion()
    target = rocksalt(5.64)
    oracle = MixtureOracle(diff, [target], [1.0])
    sampler = PredictorCorrectorSampler(diff, num_steps=1000)
    out = sampler.sample(oracle, torch.full((20,), 8), seed=0, progress=False)
    ok = match(out, target)
    assert float(ok.double().mean()) >= 0.95, ok
    # two network calls per step (corrector + predictor), one unconditional pass each
    assert len(oracle.calls) == 2000 and all(n == 20 and not bool(u.any()) for n, u in oracle.calls)


def test_mixture_of_two_crystals_de_novo():
    """NaCl rock salt (a = 5.64) vs ZnS zinc blende (a = 5.41), equal weights: every sample is one of them,
    types, coordinates and lattice coherently, in proportion 1:1."""
    diff = CrystalDiffusion()
    A, Bz = rocksalt(5.64), zincblende(5.41)
    oracle = MixtureOracle(diff, [A, Bz], [0.5, 0.5])
    n = 48
    out = PredictorCorrectorSampler(diff, num_steps=200).sample(oracle, torch.full((n,), 8), seed=1, progress=False)
    okA, okB = match(out, A), match(out, Bz)
    assert float((okA | okB).double().mean()) >= 0.95
    nA = int(okA.sum())
    assert abs(nA - 0.5 * n) <= 3.5 * math.sqrt(n * 0.25), nA


def test_mixture_csp_unequal_weights():
    """CSP (types fixed, Na4Cl4): rock salt a = 5.64 (π = 0.3) vs zinc-blende arrangement a = 6.2 (π = 0.7)."""
    diff = CrystalDiffusion(fields=CSP_FIELDS)
    A, Bz = rocksalt(5.64), zincblende(6.2, ("Na", "Cl"))
    oracle = MixtureOracle(diff, [A, Bz], [0.3, 0.7])
    n = 80
    fixed = CrystalBatch.from_structures([A] * n).atom_types
    out = PredictorCorrectorSampler(diff, num_steps=200).sample(oracle, torch.full((n,), 8), seed=2,
                                                                fixed_atom_types=fixed, progress=False)
    assert torch.equal(out.atom_types, fixed)
    okA, okB = match(out, A), match(out, Bz)
    assert float((okA | okB).double().mean()) >= 0.95
    nA = int(okA.sum())
    assert abs(nA - 0.3 * n) <= 3.5 * math.sqrt(n * 0.3 * 0.7), nA
