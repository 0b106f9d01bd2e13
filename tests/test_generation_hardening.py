"""Restrictions and counts passed to generate() are honoured exactly or refused before sampling (issue 11)."""
import time

import pytest
import torch

import mattergen_kit as mk

STEPS = 2  # these tests check arguments, not quality


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return mk.load_model()


@pytest.mark.parametrize("allowed,match", [
    ([], r"allowed_elements is empty"),
    (["He", "Ne"], r"none of the allowed elements \(He, Ne\) can be generated"),
    (["Tc"], r"none of the allowed elements \(Tc\) can be generated"),
    (["Rn", "U"], r"none of the allowed elements \(Rn, U\)"),
    (["Li", "Qq"], r"'Qq' is not an element"),
    ([0], r"0 is not an atomic number"),
    ([3, 200], r"200 is not an atomic number"),
])
def test_an_unsamplable_restriction_is_refused_before_sampling(model, allowed, match):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        model.generate(2, seed=0, steps=1000, allowed_elements=allowed, progress=False)
    assert time.perf_counter() - start < 5  # refused up front, not after 1000 steps


def test_a_partly_unsamplable_restriction_keeps_the_rest_and_says_so(model):
    with pytest.warns(UserWarning, match=r"He cannot be generated"):
        structures = model.generate(3, seed=0, steps=STEPS, allowed_elements=["Li", "He"], progress=False)
    assert len(structures) == 3
    assert all({el.symbol for el in s.composition} == {"Li"} for s in structures)


def test_atomic_numbers_work_like_symbols(model):
    a = model.sample(2, seed=4, steps=STEPS, allowed_elements=["O", "Fe"], progress=False)
    b = model.sample(2, seed=4, steps=STEPS, allowed_elements=[8, 26], progress=False)
    assert torch.equal(a.atom_types, b.atom_types)
    assert set(a.atom_types.tolist()) <= {8, 26}


def test_fixed_atom_types_must_have_one_entry_per_crystal(model):
    with pytest.raises(ValueError, match=r"fixed_atom_types has 1 entries but num=2"):
        model.generate(2, steps=STEPS, fixed_atom_types=[["Na", "Cl"]], progress=False)
    (s,) = model.generate(1, seed=0, steps=STEPS, fixed_atom_types=[["Na", "Cl"]], progress=False)
    assert sorted(el.symbol for el in s.species) == ["Cl", "Na"]


def test_num_atoms_must_have_one_entry_per_crystal(model):
    with pytest.raises(ValueError, match=r"num_atoms has 3 entries but num=2"):
        model.generate(2, steps=STEPS, num_atoms=torch.tensor([4, 4, 4]), progress=False)


@pytest.mark.parametrize("steps", [0, 1, -5])
def test_too_few_steps_are_an_error_never_the_default(model, steps):
    with pytest.raises(ValueError, match=rf"steps must be at least 2, got {steps}"):
        model.generate(2, steps=steps, progress=False)


@pytest.mark.parametrize("seed", [10**23, -1, 2**63, 1.5, True])
def test_a_seed_out_of_range_says_so(model, seed):
    with pytest.raises(ValueError, match=r"seed must be an integer with 0 <= seed < 2\*\*63"):
        model.generate(1, seed=seed, steps=STEPS, progress=False)


def test_sampling_uses_one_thread_by_default_and_restores_the_callers_setting(model, monkeypatch):
    seen = []
    real = model.denoiser.forward

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(model.denoiser, "forward", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model.generate(1, seed=0, steps=STEPS, progress=False)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        model.generate(1, seed=0, steps=STEPS, progress=False, threads=None)  # None: keep the caller's setting
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        model.generate(1, steps=STEPS, threads=0)
