"""Validity metrics: bundled crystals are valid, broken ones are reported per structure and never crash."""

import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mattergen_kit.evaluation import evaluate, smact_validity, structural_validity
from mattergen_kit.evaluation.validity import bond_sanity, check_structure


@pytest.fixture(scope="module")
def test_structures():
    from mattergen_kit.evaluation.reference import bundled

    return bundled("test").structures


def test_bundled_test_structures_are_structurally_valid(test_structures):
    sub = test_structures[:300]
    ok = [structural_validity(s)[0] for s in sub]
    assert np.mean(ok) >= 0.99
    bonds = [bond_sanity(s)[0] for s in sub]
    assert np.mean(bonds) >= 0.95


@pytest.mark.parametrize("formula,expected", [
    ("NaCl", True), ("Fe2O3", True), ("NaCl2", False), ("Fe3Al", True),  # alloy: all metals
    ("Si", True), ("Li2O", True), ("ClO", True), ("NaO5", False), ("CsF", True), ("KNa", True),
])
def test_smact_validity_known_compositions(formula, expected):
    assert smact_validity(formula) is expected


def test_smact_validity_matches_cdvae_brute_force(test_structures):
    """Our pruned search equals CDVAE's exhaustive product over oxidation states on 150 real compositions."""
    import itertools
    from functools import reduce
    from math import gcd

    import smact
    from smact.screening import pauling_test

    def cdvae(comp):
        d = comp.get_el_amt_dict()
        syms = tuple(d)
        count = [int(d[s]) for s in syms]
        g = reduce(gcd, count)
        count = [c // g for c in count]
        space = smact.element_dictionary(syms)
        els = [space[s] for s in syms]
        if len(set(syms)) == 1 or all(s in smact.metals for s in syms):
            return True
        for st in itertools.product(*[e.oxidation_states for e in els]):
            if sum(q * c for q, c in zip(st, count)) == 0:
                try:
                    ok = pauling_test(st, [e.pauling_eneg for e in els])
                except TypeError:
                    ok = True
                if ok:
                    return True
        return False

    comps = [s.composition for s in test_structures[:150]]
    assert [smact_validity(c) for c in comps] == [cdvae(c) for c in comps]


def _bad_structures():
    good = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    overlap = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.02, 0, 0]])
    nan_lattice = Structure(np.array([[np.nan, 0, 0], [0, 3, 0], [0, 0, 3]]), ["Na"], [[0, 0, 0]])
    isolated = Structure(Lattice.cubic(30.0), ["Fe"], [[0, 0, 0]])
    tiny = Structure(Lattice.cubic(0.3), ["H"], [[0, 0, 0]])
    return [good, overlap, nan_lattice, isolated, tiny, None]


def test_check_structure_flags_bad_structures():
    rows = [check_structure(s) for s in _bad_structures()[:5]]
    assert rows[0]["structural_valid"] and rows[0]["bond_ok"]
    assert not rows[1]["structural_valid"] and "apart" in rows[1]["validity_reason"]
    assert not rows[2]["structural_valid"] and "non-finite" in rows[2]["validity_reason"]
    assert rows[3]["structural_valid"] and not rows[3]["bond_ok"] and rows[3]["n_isolated_atoms"] == 1
    assert not rows[4]["structural_valid"]  # volume 0.027 Å^3 and its own image at 0.3 Å


def test_evaluate_reports_bad_structures_without_crashing(tmp_path):
    """Bad inputs go through the whole pipeline (incl. relaxation) and are reported per structure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate(_bad_structures(), reference=None, relax=True, steps=5, out=tmp_path, distribution=False,
                       band_gap=False, progress=False)
    df = rep.per_structure
    assert len(df) == 6 and rep.summary["n"] == 6
    assert list(df["structural_valid"]) == [True, False, False, True, False, False]
    assert df.loc[0, "relaxed"]  # the good one was relaxed
    assert "invalid" in str(df.loc[1, "relax_error"])
    assert rep.summary["structural_validity"] == pytest.approx(2 / 6)
    assert (tmp_path / "per_structure.csv").exists() and (tmp_path / "summary.json").exists()


def test_exploded_and_skewed_cells_are_judged_without_a_huge_image_search():
    from pymatgen.core import Lattice, Structure

    from mattergen_kit.evaluation import structural_validity

    exploded = Structure(Lattice([[2e4, 0, 0], [0, 3, 0], [0, 0, 3]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    ok, reason = structural_validity(exploded)
    assert not ok and "exploded" in reason
    # rock salt in a very skewed (but equivalent) cell: the LLL-reduced search finds it valid
    rocksalt = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    skewed = rocksalt.copy()
    skewed.make_supercell([[1, 0, 0], [40, 1, 0], [0, 0, 1]])
    assert structural_validity(rocksalt)[0] and structural_validity(skewed)[0]
