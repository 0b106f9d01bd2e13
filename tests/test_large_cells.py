"""Cells up to 52 atoms: the k-nearest-neighbour graph of the denoiser and the cell-choice augmentation, on real
MPTS-52 crystals with 30–52 atoms (real rows of the MPTS-52 source CSV, tests/data/mp_rows/, parsed by pymatgen)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mattergen_kit.data.cell_choice import random_equivalent_cells, random_unimodular
from mattergen_kit.data.crystal_batch import CrystalBatch, canonicalize_structure
from mattergen_kit.model import CrystalDenoiser
from mattergen_kit.model.denoiser import fully_connected_edges, nearest_neighbour_edges, parse_graph

ATOL = 2e-4
K = 12


@pytest.fixture(scope="module")
def large_structures():
    """Three real MPTS-52 crystals with 30–52 atoms (canonical cells), plus a 5-atom one."""
    df = pd.read_csv(Path(__file__).parent / "data" / "mp_rows" / "mpts_52_val_large.csv.gz")  # make_mp_rows.py
    out = []
    for cif in df.cif:
        s = Structure.from_str(cif, fmt="cif")
        if 30 <= len(s) <= 52 and s.is_ordered:
            out.append(canonicalize_structure(s))
        if len(out) == 3:
            break
    small = [canonicalize_structure(Structure.from_str(c, fmt="cif")) for c in df.cif[:60]]
    out.append(next(s for s in small if len(s) == 5))
    assert len(out) == 4 and max(len(s) for s in out) > K
    return out


@pytest.fixture(scope="module")
def knn_model():
    torch.manual_seed(0)
    net = CrystalDenoiser(hidden_dim=32, num_layers=2, crystal_summary=True, composition_logits=True,
                          graph=f"knn:{K}").eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "summary.out" in name or "composition_logits" in name:
                p.normal_(0, 0.1)
    return net


def run(model, batch, t):
    with torch.no_grad():
        return model(batch, t)


def test_parse_graph_rejects_bad_values():
    assert parse_graph("all") is None and parse_graph("knn:24") == 24
    for bad in ("knn", "knn:0", "knn:x", "radius:5", ""):
        with pytest.raises(ValueError, match="knn:K"):
            parse_graph(bad)


def test_knn_edges_are_the_nearest_minimum_image_neighbours(large_structures):
    """Each atom's K edges go to its K nearest atoms by pymatgen's minimum-image distance (self first)."""
    batch = CrystalBatch.from_structures(large_structures)
    src, dst = nearest_neighbour_edges(batch.frac_coords, batch.lattice, batch.num_atoms, K)
    offsets = np.concatenate([[0], np.cumsum(batch.num_atoms.numpy())])
    for b, s in enumerate(large_structures):
        dist = s.distance_matrix  # minimum image, Å
        n = len(s)
        for i in range(n):
            mine = sorted(int(j) - offsets[b] for j in dst[src == offsets[b] + i])
            assert len(mine) == min(K, n) and i in mine
            kth = np.sort(dist[i])[min(K, n) - 1]
            assert all(dist[i, j] <= kth + 1e-4 for j in mine), (b, i)
    # a cell of N <= K atoms keeps exactly the all-pairs graph
    n = torch.tensor([5, 3])
    frac, lattice = torch.rand(8, 3), torch.eye(3).expand(2, 3, 3) * 5
    assert all(torch.equal(a, c) for a, c in zip(nearest_neighbour_edges(frac, lattice, n, K),
                                                  fully_connected_edges(n)))


def test_knn_equals_all_pairs_below_k(knn_model, large_structures):
    """Same weights, graph 'all' vs 'knn:K': identical outputs on a cell of N ≤ K, different ones above."""
    dense = CrystalDenoiser(**{**knn_model.config_dict(), "graph": "all"}).eval()
    dense.load_state_dict(knn_model.state_dict())
    small = CrystalBatch.from_structures(large_structures[3:])
    t = torch.tensor([0.4])
    for a, c in zip(vars(run(dense, small, t)).values(), vars(run(knn_model, small, t)).values()):
        torch.testing.assert_close(a, c)
    big = CrystalBatch.from_structures(large_structures[:1])
    assert not torch.allclose(run(dense, big, t).coord_score, run(knn_model, big, t).coord_score)


def _noisy(large_structures, seed=0):
    batch = CrystalBatch.from_structures(large_structures)
    g = torch.Generator().manual_seed(seed)
    return batch.replace(frac_coords=(batch.frac_coords + 0.01 * torch.randn(batch.frac_coords.shape, generator=g))
                         % 1.0), torch.rand(len(large_structures), generator=g)


def test_knn_translation_and_image_invariance(knn_model, large_structures):
    b, t = _noisy(large_structures, 1)
    out = run(knn_model, b, t)
    shift = torch.rand(b.num_crystals, 3)[b.batch_idx]
    image = torch.randint(-2, 3, b.frac_coords.shape).float()
    for moved in ((b.frac_coords + shift) % 1.0, b.frac_coords + image):
        out2 = run(knn_model, b.replace(frac_coords=moved), t)
        for a, c in zip(vars(out).values(), vars(out2).values()):
            torch.testing.assert_close(a, c, atol=ATOL, rtol=0)


def test_knn_rotation_invariance(knn_model, large_structures):
    b, t = _noisy(large_structures, 2)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))
    R = q * torch.sign(torch.diagonal(r))
    R = R if torch.det(R) > 0 else -R
    knn_model.symmetrize_lattice = False
    try:
        out, out2 = run(knn_model, b, t), run(knn_model, b.replace(lattice=b.lattice @ R.T), t)
    finally:
        knn_model.symmetrize_lattice = True
    torch.testing.assert_close(out2.type_logits, out.type_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.coord_score, out.coord_score, atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.lattice_score, out.lattice_score @ R.T, atol=ATOL, rtol=0)


def test_knn_permutation_equivariance(knn_model, large_structures):
    b, t = _noisy(large_structures, 4)
    out = run(knn_model, b, t)
    parts, offsets = b.split(), np.concatenate([[0], np.cumsum(b.num_atoms.numpy())])
    order, new, perm = [2, 0, 3, 1], [], []
    for c in order:
        p = torch.randperm(len(parts[c].atom_types), generator=torch.Generator().manual_seed(c))
        new.append(parts[c].replace(atom_types=parts[c].atom_types[p], frac_coords=parts[c].frac_coords[p]))
        perm.append(offsets[c] + p)
    out2 = run(knn_model, CrystalBatch.collate(new), t[order])
    perm = torch.cat(perm)
    torch.testing.assert_close(out2.type_logits, out.type_logits[perm], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.coord_score, out.coord_score[perm], atol=ATOL, rtol=0)
    torch.testing.assert_close(out2.lattice_score, out.lattice_score[order], atol=ATOL, rtol=0)


def test_random_equivalent_cells_keep_the_crystal(large_structures):
    """Every moved crystal is the same crystal (same composition, same sorted distance matrix, same volume) in a
    symmetric lattice with another Gram matrix; probability 0 changes nothing."""
    batch = CrystalBatch.from_structures(large_structures)
    gen = torch.Generator().manual_seed(0)
    m = random_unimodular(64, 3, gen)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(64))
    assert torch.equal(m, m.round())
    moved = random_equivalent_cells(batch, 1.0, generator=gen)
    assert torch.equal(moved.atom_types, batch.atom_types) and torch.equal(moved.num_atoms, batch.num_atoms)
    torch.testing.assert_close(moved.lattice, moved.lattice.transpose(1, 2), atol=1e-4, rtol=0)
    assert ((moved.frac_coords >= 0) & (moved.frac_coords < 1)).all()
    changed = 0
    for a, c in zip(batch.to_structures(), moved.to_structures()):
        assert a.composition == c.composition and abs(a.volume - c.volume) < 1e-3 * a.volume
        np.testing.assert_allclose(np.sort(a.distance_matrix, axis=None), np.sort(c.distance_matrix, axis=None),
                                   atol=2e-3)
        changed += not np.allclose(a.lattice.matrix, c.lattice.matrix, atol=1e-3)
    assert changed >= 3
    same = random_equivalent_cells(batch, 0.0, generator=gen)
    assert torch.equal(same.lattice, batch.lattice) and torch.equal(same.frac_coords, batch.frac_coords)
    with pytest.raises(ValueError, match="probability"):
        random_equivalent_cells(batch, 1.5)
