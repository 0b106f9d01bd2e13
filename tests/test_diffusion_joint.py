"""CrystalDiffusion: corrupt/losses contract, determinism, CSP mode, permutation/translation invariance."""
import math

import pytest
import torch
from pymatgen.core import Lattice, Structure

from mattergen_kit.data import MASK_Z, CrystalBatch
from mattergen_kit.diffusion import CSP_FIELDS, CrystalDiffusion, DenoiserOutput


def rocksalt(a=5.64, species=("Na", "Cl")):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def example_batch():
    s2 = Structure(Lattice([[3.0, 0.2, 0.0], [0.2, 4.0, 0.1], [0.0, 0.1, 5.0]]), ["Li", "O", "O"],
                   [[0.1, 0.2, 0.3], [0.6, 0.95, 0.05], [0.33, 0.5, 0.99]])
    return CrystalBatch.from_structures([rocksalt(), s2])


class StandInModel(torch.nn.Module):
    """Deterministic, permutation-equivariant and translation-invariant stand-in denoiser.

    Per atom: features from Fourier terms of fractional differences to all atoms of its crystal
    (translation invariant), summed (permutation equivariant), plus the atom's own noisy type.
    """

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W_type = torch.nn.Parameter(torch.randn(102, 101, generator=g) * 0.3)
        self.W_f = torch.nn.Parameter(torch.randn(6, 101, generator=g) * 0.3)
        self.W_c = torch.nn.Parameter(torch.randn(6, 3, generator=g) * 0.3)

    def forward(self, noisy, t, conditions=None, use_condition=None):
        bidx = noisy.batch_idx
        f = noisy.frac_coords
        feats = torch.zeros(f.shape[0], 6)
        for i in range(noisy.num_crystals):
            idx = (bidx == i).nonzero().squeeze(-1)
            d = 2 * math.pi * (f[idx, None, :] - f[None, idx, :])      # (n, n, 3)
            feats[idx] = torch.cat([torch.cos(d), torch.sin(d)], -1).sum(1)
        logits = self.W_type[noisy.atom_types] + feats @ self.W_f + t[bidx, None]
        coord = feats @ self.W_c
        lat = 0.1 * noisy.lattice + t[:, None, None]
        return DenoiserOutput(logits, coord, 0.5 * (lat + lat.transpose(1, 2)))


def test_shapes_and_determinism():
    diff = CrystalDiffusion()
    batch = example_batch()
    t = diff.sample_time(2, torch.Generator().manual_seed(0))
    assert t.shape == (2,) and float(t.min()) >= 1e-5 and float(t.max()) <= 1.0
    n1, tg1 = diff.corrupt(batch, t, torch.Generator().manual_seed(1))
    n2, tg2 = diff.corrupt(batch, t, torch.Generator().manual_seed(1))
    assert torch.equal(n1.frac_coords, n2.frac_coords) and torch.equal(n1.lattice, n2.lattice)
    assert torch.equal(n1.atom_types, n2.atom_types)
    assert n1.frac_coords.shape == (11, 3) and tg1["coords"].shape == (11, 3) and tg1["lattice"].shape == (2, 3, 3)
    assert float(n1.frac_coords.min()) >= 0 and float(n1.frac_coords.max()) < 1
    assert set(n1.atom_types.unique().tolist()) <= set(batch.atom_types.tolist()) | {MASK_Z}
    torch.testing.assert_close(n1.lattice, n1.lattice.transpose(1, 2))
    out = StandInModel()(n1, t)
    losses = diff.losses(out, batch, n1, tg1, t)
    assert set(losses) == {"loss", "loss_types", "loss_coords", "loss_lattice"}
    total = losses["loss_types"] + 0.1 * losses["loss_coords"] + losses["loss_lattice"]
    torch.testing.assert_close(losses["loss"], total)
    losses["loss"].backward()  # differentiable w.r.t. the model


def test_losses_are_per_crystal_sums_then_batch_mean():
    """Coordinates: Σ_atoms mean_xyz; lattice: mean_9; both then averaged over crystals."""
    diff = CrystalDiffusion()
    batch = example_batch()
    t = torch.tensor([0.3, 0.6])
    noisy, tg = diff.corrupt(batch, t, torch.Generator().manual_seed(2))
    out = DenoiserOutput(torch.zeros(11, 101), torch.zeros(11, 3), torch.zeros(2, 3, 3))
    losses = diff.losses(out, batch, noisy, tg, t)
    per_crystal = [tg["coords"][:8].pow(2).mean(-1).sum(), tg["coords"][8:].pow(2).mean(-1).sum()]
    torch.testing.assert_close(losses["loss_coords"], (per_crystal[0] + per_crystal[1]) / 2)
    torch.testing.assert_close(losses["loss_lattice"], tg["lattice"].pow(2).mean())


def test_csp_mode_keeps_types():
    diff = CrystalDiffusion(fields=CSP_FIELDS)
    batch = example_batch()
    t = torch.tensor([1.0, 1.0])
    noisy, tg = diff.corrupt(batch, t, torch.Generator().manual_seed(3))
    assert torch.equal(noisy.atom_types, batch.atom_types)
    losses = diff.training_losses(StandInModel(), batch, torch.Generator().manual_seed(4))
    assert float(losses["loss_types"]) == 0.0
    with pytest.raises(ValueError):
        CrystalDiffusion(fields=("atom_types", "coords"))


@pytest.mark.parametrize("t", [0.2, 0.7, 1.0])
def test_losses_invariant_to_permutation_and_translation(t):
    """Same noise (fixed generator), permuted / translated crystal ⇒ identical losses."""
    diff = CrystalDiffusion()
    model = StandInModel()
    batch = example_batch()
    tt = torch.full((2,), t)
    noisy, tg = diff.corrupt(batch, tt, torch.Generator().manual_seed(5))
    ref = diff.losses(model(noisy, tt), batch, noisy, tg, tt)

    # permutation within each crystal: permute the clean batch, the corruption and the targets alike
    perm = torch.cat([torch.randperm(8, generator=torch.Generator().manual_seed(6)),
                      8 + torch.tensor([2, 0, 1])])
    pb = batch.replace(atom_types=batch.atom_types[perm], frac_coords=batch.frac_coords[perm])
    pn = noisy.replace(atom_types=noisy.atom_types[perm], frac_coords=noisy.frac_coords[perm])
    ptg = {k: (v[perm] if torch.is_tensor(v) and v.shape[0] == 11 else v) for k, v in tg.items()}
    got = diff.losses(model(pn, tt), pb, pn, ptg, tt)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)

    # periodic translation of all fractional coordinates of each crystal, same generator
    shift = torch.tensor([[0.37, 0.81, 0.55], [0.9, 0.05, 0.5]])[batch.batch_idx]
    tb = batch.replace(frac_coords=(batch.frac_coords + shift) % 1.0)
    tn, ttg = diff.corrupt(tb, tt, torch.Generator().manual_seed(5))
    d = tn.frac_coords - (noisy.frac_coords + shift)
    assert float((d - torch.round(d)).abs().max()) < 1e-5                         # same noise, translated
    got = diff.losses(model(tn, tt), tb, tn, ttg, tt)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5)
