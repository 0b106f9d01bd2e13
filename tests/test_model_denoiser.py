"""CrystalDenoiser: shapes, symmetries (checked numerically), conditioning hook, real data without NaN."""
import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mattergen_kit.data.crystal_batch import MASK_Z, CrystalBatch, canonicalize_structure, symmetric_polar_factor
from mattergen_kit.model import CrystalDenoiser, DenoiserConfig, fully_connected_edges

ATOL = 2e-4


def random_batch(seed=0, sizes=(1, 3, 5, 8)):
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(sizes)
    A = torch.randn(len(sizes), 3, 3, generator=g) + 4 * torch.eye(3)
    lattice = symmetric_polar_factor(A)  # canonical (symmetric) like the data
    types = torch.randint(1, 95, (int(n.sum()),), generator=g)
    types[::4] = MASK_Z  # some masked atoms, as during diffusion
    return CrystalBatch(types, torch.rand(int(n.sum()), 3, generator=g), lattice, n)


@pytest.fixture(scope="module", params=["plain", "summary+composition_logits"])
def model(request):
    torch.manual_seed(0)
    if request.param == "plain":
        return CrystalDenoiser(hidden_dim=32, num_layers=2).eval()
    net = CrystalDenoiser(hidden_dim=32, num_layers=2, crystal_summary=True, composition_logits=True).eval()
    with torch.no_grad():  # the optional parts start at zero: give them weights so the symmetry tests see them
        for name, p in net.named_parameters():
            if "summary.out" in name or "composition_logits" in name:
                p.normal_(0, 0.1)
    return net


def run(model, batch, t):
    with torch.no_grad():
        return model(batch, t)


def test_edges_fully_connected():
    src, dst = fully_connected_edges(torch.tensor([2, 1, 3]))
    pairs = set(zip(src.tolist(), dst.tolist()))
    expect = {(i, j) for grp in ([0, 1], [2], [3, 4, 5]) for i in grp for j in grp}
    assert pairs == expect and len(src) == len(expect)


def test_shapes_and_symmetric_lattice(model):
    b = random_batch()
    out = run(model, b, torch.rand(4))
    assert out.type_logits.shape == (17, 101)
    assert out.coord_score.shape == (17, 3)
    assert out.lattice_score.shape == (4, 3, 3)
    torch.testing.assert_close(out.lattice_score, out.lattice_score.transpose(1, 2))


def test_permutation_equivariance(model):
    b, t = random_batch(1), torch.rand(4)
    out = run(model, b, t)
    # permute atoms within each crystal and the order of crystals
    order = [2, 0, 3, 1]
    parts, perm = b.split(), []
    offsets = np.concatenate([[0], np.cumsum(b.num_atoms.numpy())])
    new = []
    for c in order:
        p = torch.randperm(len(parts[c].atom_types))
        new.append(parts[c].replace(atom_types=parts[c].atom_types[p], frac_coords=parts[c].frac_coords[p]))
        perm.append(offsets[c] + p)
    b2, perm = CrystalBatch.collate(new), torch.cat(perm)
    out2 = run(model, b2, t[order])
    torch.testing.assert_close(out2.type_logits, out.type_logits[perm], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.coord_score, out.coord_score[perm], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.lattice_score, out.lattice_score[order], atol=ATOL, rtol=0)


def test_periodic_translation_invariance(model):
    b, t = random_batch(2), torch.rand(4)
    out = run(model, b, t)
    shift = torch.rand(4, 3)[b.batch_idx]  # one random shift per crystal
    out2 = run(model, b.replace(frac_coords=(b.frac_coords + shift) % 1.0), t)
    for a, c in zip(out, out2) if isinstance(out, tuple) else zip(vars(out).values(), vars(out2).values()):
        torch.testing.assert_close(a, c, atol=ATOL, rtol=0)


def test_cell_image_invariance(model):
    """Moving atoms to other images (f → f + n, n integer, no wrapping) changes nothing."""
    b, t = random_batch(3), torch.rand(4)
    out = run(model, b, t)
    n = torch.randint(-2, 3, b.frac_coords.shape).float()
    out2 = run(model, b.replace(frac_coords=b.frac_coords + n), t)
    torch.testing.assert_close(out2.type_logits, out.type_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.coord_score, out.coord_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.lattice_score, out.lattice_score, atol=ATOL, rtol=0)


def random_rotation(seed):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_rotation_gram_invariance_and_lattice_equivariance(model):
    """Rotated input L Rᵀ (rows a_k → R a_k): per-atom outputs are unchanged; the unsymmetrised lattice
    output M L goes to M L Rᵀ, the way a score on L transforms."""
    b, t = random_batch(4), torch.rand(4)
    R = random_rotation(0)
    rotated = b.replace(lattice=b.lattice @ R.T)
    model.symmetrize_lattice = False
    try:
        out, out2 = run(model, b, t), run(model, rotated, t)
    finally:
        model.symmetrize_lattice = True
    torch.testing.assert_close(out2.type_logits, out.type_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.coord_score, out.coord_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.lattice_score, out.lattice_score @ R.T, atol=ATOL, rtol=0)


def test_rotated_structure_recanonicalised_gives_same_output(model):
    s = Structure(Lattice([[4.0, 0.3, 0.1], [0.2, 5.0, 0.4], [0.1, 0.5, 6.0]]), ["Li", "Fe", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.1, 0.7], [0.8, 0.6, 0.3]])
    R = random_rotation(1).double().numpy()
    s_rot = Structure(Lattice(s.lattice.matrix @ R.T), s.species, s.frac_coords)
    b1 = CrystalBatch.from_structures([canonicalize_structure(s, primitive=False)])
    b2 = CrystalBatch.from_structures([canonicalize_structure(s_rot, primitive=False)])
    torch.testing.assert_close(b1.lattice, b2.lattice, atol=1e-4, rtol=0)
    t = torch.tensor([0.3])
    out1, out2 = run(model, b1, t), run(model, b2, t)
    torch.testing.assert_close(out1.coord_score, out2.coord_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(out1.lattice_score, out2.lattice_score, atol=ATOL, rtol=0)


class ToyAdapter(torch.nn.Module):
    """Adapter protocol: (layer, h, batch_idx, conditions, use_condition) -> (ΣN, H) term."""

    def __init__(self, hidden, scale=0.0):
        super().__init__()
        self.proj = torch.nn.Linear(1, hidden)
        torch.nn.init.constant_(self.proj.weight, scale)
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, layer, h, batch_idx, conditions, use_condition):
        if "x" not in conditions:  # the denoiser calls the adapter without conditions too: the null input
            return torch.zeros_like(h)
        e = self.proj(conditions["x"][:, None])
        return (e * use_condition[:, None].float())[batch_idx]


def test_condition_hook(model):
    b, t = random_batch(5), torch.rand(4)
    base = run(model, b, t)
    cond = {"x": torch.ones(4)}
    run_ = lambda: model(b, t, conditions=cond, use_condition=torch.tensor([True, False, True, False]))
    torch.testing.assert_close(run(model, b, t).coord_score, base.coord_score)  # no adapter: conditions ignored
    with torch.no_grad():
        model.adapter = ToyAdapter(32, 0.0)  # zero-initialised adapter = the base model exactly
        try:
            torch.testing.assert_close(run_().coord_score, base.coord_score)
            model.adapter = ToyAdapter(32, 1.0)
            out = run_()
            torch.testing.assert_close(model(b, t).coord_score, base.coord_score)  # conditions=None: ignored
        finally:
            model.adapter = None
    bi = b.batch_idx
    off = (bi == 1) | (bi == 3)
    torch.testing.assert_close(out.coord_score[off], base.coord_score[off])
    assert not torch.allclose(out.coord_score[~off], base.coord_score[~off])


def test_bundled_batch_forward_backward_finite():
    datasets = pytest.importorskip("mattergen_kit.datasets")
    from mattergen_kit.diffusion.joint import CrystalDiffusion

    ds = datasets.load_bundled("val", progress=False)
    batch = CrystalBatch.collate([ds[i] for i in range(32)])
    model = CrystalDenoiser(hidden_dim=32, num_layers=2)
    diffusion = CrystalDiffusion()
    for t_value in (1e-5, 0.5, 1.0):
        t = torch.full((32,), t_value)
        noisy, targets = diffusion.corrupt(batch, t, torch.Generator().manual_seed(0))
        losses = diffusion.losses(model(noisy, t), batch, noisy, targets, t)
        model.zero_grad()
        losses["loss"].backward()
        assert all(torch.isfinite(v) for v in losses.values())
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_optional_parts_start_at_zero_and_grow_from_a_checkpoint(tmp_path):
    """A base checkpoint continued with the crystal summary and composition logits switched on gives exactly
    the base outputs at step 0 (real bundled crystals); switching a part off that the checkpoint has is refused."""
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.model.checkpoint import CheckpointError, save_checkpoint
    from mattergen_kit.training.config import TrainConfig
    from mattergen_kit.training.module import DiffusionModule

    torch.manual_seed(1)
    base = CrystalDenoiser(hidden_dim=32, num_layers=2).eval()
    path = save_checkpoint(tmp_path / "base.pt", base.config_dict(), base.state_dict())
    grown = DiffusionModule(TrainConfig(model=DenoiserConfig(hidden_dim=32, num_layers=2, crystal_summary=True,
                                                         composition_logits=True),
                                        init_from=str(path))).denoiser.eval()
    batch = CrystalBatch.from_structures(load_bundled("val", progress=False).structures[:6])
    batch = batch.replace(atom_types=torch.where(torch.arange(len(batch.atom_types)) % 3 == 0,
                                                 torch.full_like(batch.atom_types, MASK_Z), batch.atom_types))
    t = torch.full((6,), 0.4)
    a, b = run(base, batch, t), run(grown, batch, t)
    for field in ("type_logits", "coord_score", "lattice_score"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    grown_path = save_checkpoint(tmp_path / "grown.pt", grown.config_dict(), grown.state_dict())
    with pytest.raises(CheckpointError, match="set model.hidden_dim"):
        DiffusionModule(TrainConfig(model=DenoiserConfig(hidden_dim=32, num_layers=2), init_from=str(grown_path)))


def test_composition_logits_see_the_revealed_elements():
    """The co-occurrence prior W c_b depends on which elements the cell holds, not on their order."""
    torch.manual_seed(0)
    net = CrystalDenoiser(hidden_dim=16, num_layers=1, composition_logits=True).eval()
    with torch.no_grad():
        net.composition_logits.weight.copy_(torch.eye(101) * 5.0)  # "the same element again"
    lattice = symmetric_polar_factor(torch.eye(3).expand(1, 3, 3) * 4.0)
    frac = torch.rand(4, 3)
    batch = CrystalBatch(torch.tensor([3, 8, MASK_Z, MASK_Z]), frac, lattice, torch.tensor([4]))
    plain = net.composition_logits
    net.composition_logits = None
    without = run(net, batch, torch.tensor([0.5])).type_logits
    net.composition_logits = plain
    shift = run(net, batch, torch.tensor([0.5])).type_logits - without
    # c_b = (Li: 1/4, O: 1/4, mask: 1/2) → +1.25 on Li (class 2) and O (class 7), +2.5 on the mask class
    assert torch.allclose(shift[:, 2], torch.full((4,), 1.25)) and torch.allclose(shift[:, 7], torch.full((4,), 1.25))
    assert torch.allclose(shift[:, 100], torch.full((4,), 2.5)) and float(shift[:, 10].abs().max()) == 0.0
