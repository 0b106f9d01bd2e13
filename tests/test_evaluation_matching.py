"""Uniqueness and novelty (StructureMatcher ltol 0.2, stol 0.3, angle_tol 5; prefiltered by formula)."""

import warnings

import numpy as np
import pytest

from mattergen_kit.evaluation.matching import ReferenceIndex, default_matcher, novel_mask, unique_mask


@pytest.fixture(scope="module")
def splits():
    from mattergen_kit.evaluation.reference import bundled

    return bundled("train"), bundled("test")


def _equivalent_copies(s, rng):
    """Supercell, permuted sites, translated, rotated copies of s (all the same crystal)."""
    from pymatgen.core import Structure
    from pymatgen.transformations.standard_transformations import RotationTransformation

    sup = s * (1, 2, 1)
    perm_idx = rng.permutation(len(s))
    perm = Structure(s.lattice, [s[i].species for i in perm_idx], s.frac_coords[perm_idx])
    trans = s.copy()
    trans.translate_sites(list(range(len(s))), [0.123, 0.456, 0.789])
    rot = RotationTransformation([1, 1, 0], 37.0).apply_transformation(s)
    return [sup, perm, trans, rot]


def test_uniqueness_detects_duplicates_and_equivalent_copies(splits):
    _, test = splits
    rng = np.random.default_rng(0)
    base = [test.structures[i] for i in (0, 4, 5, 6)]
    items = list(base)
    for s in base[:2]:
        items.append(s.copy())  # exact duplicate
        items.extend(_equivalent_copies(s, rng))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = unique_mask(items)
    assert mask[:4] == [True] * 4
    assert not any(mask[4:]), "duplicates / supercells / permuted / translated / rotated copies must not be unique"
    # a genuinely different crystal of the same formula stays unique: strain one copy by 40 %
    strained = base[0].copy()
    strained.apply_strain([0.4, 0.0, 0.0])
    assert unique_mask([base[0], strained]) == [True, True]


def test_novelty_matches_brute_force_structure_matcher(splits):
    """Formula-prefiltered novelty == brute-force fit against every reference structure (small subsample)."""
    train, test = splits
    rng = np.random.default_rng(1)
    ref_idx = rng.choice(len(train), 120, replace=False)
    reference = [train.structures[i] for i in ref_idx]
    queries = [test.structures[i] for i in rng.choice(len(test), 12, replace=False)]
    # known positives: rotated / translated copies of reference structures
    queries += [_equivalent_copies(reference[i], rng)[3] for i in (0, 7, 19)]
    queries += [_equivalent_copies(reference[i], rng)[2] for i in (3, 11)]
    sm = default_matcher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        brute = [not any(sm.fit(q, r) for r in reference) for q in queries]
        fast, matched = novel_mask(queries, ReferenceIndex(reference))
    assert fast == brute
    assert not any(fast[-5:])  # the copies are found
    assert all(m is not None for m in matched[-5:])


def test_test_split_is_mostly_novel_against_train(splits):
    train, test = splits
    idx = ReferenceIndex(train.structures[:3000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nov, _ = novel_mask(test.structures[:40], idx)
    assert np.mean(nov) >= 0.8
