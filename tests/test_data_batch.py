"""Round trips CrystalBatch <-> pymatgen <-> ASE and the canonical cell, on real MP-20 rows."""

import numpy as np
import pytest
import torch

from mattergen_kit.data.crystal_batch import CrystalBatch, canonicalize_structure


def _same_structure(a, b, atol=1e-4):
    assert len(a) == len(b)
    np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=atol)
    assert [s.specie.Z for s in a] == [s.specie.Z for s in b]
    d = np.asarray(a.frac_coords) - np.asarray(b.frac_coords)
    d -= np.round(d)  # periodic
    np.testing.assert_allclose(d, 0.0, atol=atol)


def test_pymatgen_round_trip(real_structures):
    batch = CrystalBatch.from_structures(real_structures)
    assert batch.num_crystals == len(real_structures)
    assert int(batch.num_atoms.sum()) == sum(len(s) for s in real_structures)
    for s, back in zip(real_structures, batch.to_structures()):
        _same_structure(s, back)


def test_ase_round_trip(real_structures):
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [AseAtomsAdaptor.get_atoms(s) for s in real_structures]
    batch = CrystalBatch.from_atoms(atoms)
    ref = CrystalBatch.from_structures(real_structures)
    torch.testing.assert_close(batch.lattice, ref.lattice)
    assert torch.equal(batch.atom_types, ref.atom_types)
    d = batch.frac_coords - ref.frac_coords
    assert torch.allclose(d - torch.round(d), torch.zeros_like(d), atol=1e-5)
    for a, back in zip(atoms, batch.to_atoms()):
        np.testing.assert_allclose(np.asarray(a.cell), np.asarray(back.cell), atol=1e-4)
        np.testing.assert_array_equal(a.numbers, back.numbers)
        np.testing.assert_allclose(a.get_volume(), back.get_volume(), rtol=1e-5)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@pytest.mark.parametrize("i", [0, 5, 11, 23])
def test_canonical_cell_invariant_to_rotation_and_supercell(real_structures, i):
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Lattice, Structure

    s = real_structures[i]
    rng = np.random.default_rng(i)
    rot = _random_rotation(rng)
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.frac_coords)
    supercell = s * (2, 1, 1)
    c0, c1, c2 = (canonicalize_structure(x) for x in (s, rotated, supercell))
    # the canonical lattice is symmetric and the same for all three copies
    np.testing.assert_allclose(c0.lattice.matrix, c0.lattice.matrix.T, atol=1e-8)
    np.testing.assert_allclose(c1.lattice.matrix, c0.lattice.matrix, atol=1e-5)
    np.testing.assert_allclose(c2.lattice.matrix, c0.lattice.matrix, atol=1e-5)
    assert len(c2) == len(c0)
    assert StructureMatcher().fit(c0, s) and StructureMatcher().fit(c2, s)
    assert abs(c0.volume * len(s) / len(c0) - s.volume) < 1e-6 * s.volume


def test_dataset_item_matches_structure(mini_env):
    from mattergen_kit import datasets

    ds = datasets.load_bundled("all", progress=False)
    item = ds[2]
    assert isinstance(item, CrystalBatch) and item.num_crystals == 1
    back = item.to_structures()[0]
    _same_structure(ds.structures[2], back)
    assert item.properties["material_id"] == [ds.properties["material_id"].iloc[2]]
    batch = ds.to_batch()
    assert batch.num_crystals == len(ds)
    torch.testing.assert_close(batch[2].lattice, item.lattice)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=CrystalBatch.collate)
    first = next(iter(loader))
    assert first.num_crystals == 4 and torch.equal(first.num_atoms, batch.num_atoms[:4])


# ------------------------------------------------------------------------------ issue 24: what is not a crystal
@pytest.mark.parametrize("items,error,match", [
    ([None], TypeError, "structure 0 is a NoneType, not a pymatgen Structure"),
    (["NaCl"], TypeError, "structure 0 is a str, not a pymatgen Structure"),
])
def test_from_structures_names_what_is_not_a_structure(items, error, match):
    with pytest.raises(error, match=match):
        CrystalBatch.from_structures(items)


def test_a_structure_without_atoms_and_an_index_out_of_range(real_structures):
    from pymatgen.core import Lattice, Structure

    with pytest.raises(ValueError, match="structure 0 has no atoms"):
        CrystalBatch.from_structures([Structure(Lattice.cubic(4.0), [], [])])
    batch = CrystalBatch.from_structures(real_structures[:2])
    with pytest.raises(IndexError, match="crystal 5 of a batch of 2"):
        batch[5]
    assert batch[-1].num_crystals == 1 and int(batch[-1].num_atoms[0]) == len(real_structures[1])


@pytest.mark.parametrize("value", ["NaCl", None])
def test_canonicalize_takes_a_structure(value):
    with pytest.raises(TypeError, match="canonicalize_structure takes a pymatgen Structure"):
        canonicalize_structure(value)


def test_polar_factor_of_a_matrix_that_is_no_lattice():
    from mattergen_kit.data.crystal_batch import symmetric_polar_factor

    with pytest.raises(ValueError, match=r"a lattice is a \(3, 3\) matrix"):
        symmetric_polar_factor(torch.eye(2))
    with pytest.raises(ValueError, match="NaN or infinite"):
        symmetric_polar_factor(torch.full((3, 3), float("nan")))
