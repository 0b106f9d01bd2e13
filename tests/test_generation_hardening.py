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


# ------------------------------------------------------------------------------ issue 24: every argument of the request
# tools/probe_entry_points.py found these accepted (SILENT-WRONG), ending in a library's own traceback (TRACEBACK) or
# running for minutes (HANG); each is now refused by the request before anything is sampled.
@pytest.fixture(scope="module")
def conditioned():
    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

    return mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)


REQUEST_MISTAKES = {  # name: (conditioned model?, request fields, exception, message)
    "conditions a list": (True, dict(conditions=["band_gap", 2.0]), ValueError, "conditions must be a dict"),
    "conditions a string": (True, dict(conditions="band_gap=2"), ValueError, "conditions must be a dict"),
    "space group True": (True, dict(conditions={"space_group": True}), ValueError, "True / False would be read"),
    "chemical system a number": (True, dict(conditions={"chemical_system": 5}), ValueError,
                                 "chemical_system must be a string such as 'Li-Fe-P-O'"),
    "chemical system vs formula": (True, dict(conditions={"chemical_system": "Li-O"}, formula="Fe2O3"), ValueError,
                                   "formula 'Fe2O3' has Fe, outside the element restriction"),
    "chemical system vs fixed types": (True, dict(conditions={"chemical_system": "Li-O"},
                                                  fixed_atom_types=[["Fe", "O"]] * 2), ValueError,
                                       r"fixed_atom_types\[0\] has Fe, outside the element restriction"),
    "formula vs allowed_elements": (False, dict(formula="Li2O", allowed_elements=["Fe"]), ValueError,
                                    "formula 'Li2O' has Li, O, outside the element restriction"),
    "fixed types vs allowed_elements": (False, dict(fixed_atom_types=[["Li", "O"]] * 2, allowed_elements=["Li"]),
                                        ValueError, r"fixed_atom_types\[0\] has O, outside"),
    "allowed_elements 1.5": (False, dict(allowed_elements=[1.5]), ValueError, "1.5 is not an atomic number"),
    "allowed_elements True": (False, dict(allowed_elements=[True]), ValueError, "True is not an atomic number"),
    "allowed_elements a dict": (False, dict(allowed_elements={"Li": 1}), ValueError,
                                "allowed_elements must be a list of element symbols"),
    "allowed_elements a 3-entry mask": (False, dict(allowed_elements=torch.ones(3, dtype=torch.bool)), ValueError,
                                        r"bool class mask of shape \(101,\)"),
    "allowed_elements an all-false mask": (False, dict(allowed_elements=torch.zeros(101, dtype=torch.bool)),
                                           ValueError, "masks out every element"),
    "fixed types a noble gas": (False, dict(fixed_atom_types=[["He"], ["Li"]]), ValueError,
                                r"fixed_atom_types\[0\]: He cannot be generated"),
    "fixed types of 500 atoms": (False, dict(fixed_atom_types=[["Li"] * 500] * 2), ValueError,
                                 r"fixed_atom_types\[0\] has 500 atoms; give 1 to 200"),
    "coherence_bias text": (False, dict(coherence_bias="abc"), ValueError, "coherence_bias must be False"),
    "coherence_bias nan": (False, dict(coherence_bias=float("nan")), ValueError, "coherence_bias must be False"),
    "coherence_bias t not increasing": (False, dict(coherence_bias=([0.5, 0.1], [1.0, 2.0])), ValueError,
                                        "coherence_bias must be False"),
    "enforce_symmetry 'yes'": (True, dict(enforce_symmetry="yes", conditions={"space_group": 225}), TypeError,
                               "enforce_symmetry must be True or False"),
    "progress 'no'": (False, dict(progress="no"), TypeError, "progress must be True or False"),
    "fixed types vs num_atoms": (False, dict(fixed_atom_types=[["Li", "O"]] * 2, num_atoms=5), ValueError,
                                 "fixed_atom_types and num_atoms disagree"),
}


@pytest.mark.parametrize("case", sorted(REQUEST_MISTAKES))
def test_request_mistakes_found_by_the_probe_are_refused_before_sampling(model, conditioned, case):
    use_conditioned, fields, error, match = REQUEST_MISTAKES[case]
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        (conditioned if use_conditioned else model).resolve(2, seed=0, steps=STEPS, **fields)
    assert time.perf_counter() - start < 10  # the 500-atom list used to sample for minutes


def test_a_fixed_formula_inside_the_restriction_still_samples(model):
    """The consistency rule refuses only atoms outside the restriction: Li2O within Li, O samples Li2O."""
    crystals = model.generate(2, seed=0, steps=STEPS, formula="Li2O", allowed_elements=["Li", "O"], progress=False)
    assert [c.composition.reduced_formula for c in crystals] == ["Li2O", "Li2O"]


def test_trajectory_every_zero_is_refused_not_replaced_by_ten(model):
    with pytest.raises(ValueError, match="trajectory_every must be a positive number of steps, got 0"):
        model.generate(2, seed=0, steps=STEPS, return_trajectory=True, trajectory_every=0, progress=False)


@pytest.mark.parametrize("path", [42, ["a.pt"]])
def test_load_model_of_something_that_is_not_a_path(path):
    with pytest.raises(TypeError, match="load_model takes a checkpoint path"):
        mk.load_model(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device,match", [("tpu", "is not a device name"), ("", "is not a device name"),
                                          (5, "device must be 'cpu' or 'cuda'"), ("cuda", "CUDA is not available"),
                                          ("meta", "only 'cpu' and 'cuda' are supported")])
def test_load_model_on_a_device_it_cannot_use(device, match):
    with pytest.raises(ValueError, match=match):
        mk.load_model(device=device)
