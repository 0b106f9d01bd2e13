"""Symmetry-constrained sampling: Wyckoff templates from pymatgen structures, exact projections, the sampler and
generate(enforce_symmetry=True) keeping a space group exactly."""
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from mattergen_kit.diffusion import CrystalDiffusion
from mattergen_kit.sampling import PredictorCorrectorSampler
from mattergen_kit.sampling.symmetry import SymmetryProjector, WyckoffTemplate, templates_for
from test_sampling_pc import UniformTypes


def rocksalt():
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite_pnma():  # CaTiO3-like, 20 atoms, O on two Wyckoff positions (4c and 8d)
    return Structure.from_spacegroup("Pnma", Lattice.orthorhombic(5.5, 7.8, 5.4), ["Ca", "Ti", "O", "O"],
                                     [[0.03, 0.25, 0.99], [0, 0, 0.5], [0.48, 0.25, 0.08], [0.29, 0.04, 0.71]])


def structure_of(template, frac, lattice, elements):
    return Structure(lattice.numpy(), [elements[int(s)] for s in template.species], frac.numpy())


@pytest.mark.parametrize("make, group, n, orbits, species", [(rocksalt, 225, 2, 2, 2), (perovskite_pnma, 62, 20, 4, 3)])
def test_template_and_projection_of_a_random_state_has_the_space_group(make, group, n, orbits, species):
    template = WyckoffTemplate.from_structure(make())
    assert (template.space_group, template.num_atoms, template.num_orbits, template.num_species) == \
        (group, n, orbits, species)
    g = torch.Generator().manual_seed(0)
    frac = torch.rand(n, 3, generator=g, dtype=torch.float64)            # anything, far from symmetric
    lattice = 5 * torch.eye(3, dtype=torch.float64) + torch.randn(3, 3, generator=g, dtype=torch.float64)
    lattice = 0.5 * (lattice + lattice.T)
    frac2, lattice2 = template.project_coords(frac), template.project_lattice(lattice)
    s = structure_of(template, frac2, lattice2, ["Sr", "Ti", "O"])
    assert SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number() == group
    # projections: a symmetric state is left as it is
    assert torch.allclose(template.project_coords(frac2), frac2, atol=1e-12)
    assert torch.allclose(template.project_lattice(lattice2), lattice2, atol=1e-10)


def p21c():  # a monoclinic crystal, beta = 105 degrees, two orbits on general positions (4e)
    return Structure.from_spacegroup("P2_1/c", Lattice.monoclinic(5.1, 6.2, 7.3, 105.0), ["Fe", "O"],
                                     [[0.11, 0.23, 0.31], [0.36, 0.12, 0.79]])


def test_free_cell_angles_come_from_the_template_and_the_lengths_from_the_state():
    template = WyckoffTemplate.from_structure(p21c())
    assert template.space_group == 14
    g = torch.Generator().manual_seed(3)
    near_orthogonal = torch.diag(torch.tensor([5.0, 6.5, 7.0], dtype=torch.float64)) \
        + 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    near_orthogonal = 0.5 * (near_orthogonal + near_orthogonal.T)
    own_angles = Lattice(torch.linalg.cholesky(template.metric).numpy()).angles
    free = Lattice(template.project_lattice(near_orthogonal, template_angles=False).numpy())
    fixed = template.project_lattice(near_orthogonal)
    assert max(abs(a - 90) for a in free.angles) < 3                  # the network's cell: near orthogonal
    assert Lattice(fixed.numpy()).angles == pytest.approx(own_angles, abs=1e-6)   # the template's angles
    assert Lattice(fixed.numpy()).abc == pytest.approx(free.abc, abs=1e-9)         # the state's lengths
    assert torch.allclose(template.project_lattice(fixed), fixed, atol=1e-10)      # still a projection
    frac = template.project_coords(torch.rand(template.num_atoms, 3, generator=g, dtype=torch.float64))
    s = structure_of(template, frac, fixed, ["Fe", "O"])
    assert SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() == 14
    cubic = WyckoffTemplate.from_structure(rocksalt())            # angles fixed by the group: nothing changes
    lattice = 5 * torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    lattice = 0.5 * (lattice + lattice.T)
    assert torch.allclose(cubic.project_lattice(lattice), cubic.project_lattice(lattice, template_angles=False),
                          atol=1e-9)


def test_types_are_tied_by_the_template_species_pattern():
    template = WyckoffTemplate.from_structure(perovskite_pnma())
    logits = torch.randn(20, 101, generator=torch.Generator().manual_seed(1))
    mask = 100
    types = torch.full((20,), mask)
    types[template.species == 0] = 37                                     # the Ca group holds class 37 (Sr)
    tied = template.tie_logits(logits, types, mask_class=mask)
    for g in range(template.num_species):
        rows = tied[template.species == g]
        assert torch.allclose(rows, rows[:1].expand_as(rows))             # one distribution per group
    assert bool((tied[template.species != 0][:, 37] <= -1e9).all())       # Sr is taken: not for the Ti or O groups
    assert torch.equal(template.tie_types(torch.arange(20)), template.species_first)


def test_sampler_keeps_the_space_group_of_each_template():
    diff, model = CrystalDiffusion(), UniformTypes()
    templates = [WyckoffTemplate.from_structure(rocksalt()), None, WyckoffTemplate.from_structure(perovskite_pnma())]
    num_atoms = torch.tensor([2, 5, 20])
    sampler = PredictorCorrectorSampler(diff, num_steps=20)
    batch = sampler.sample(model, num_atoms, seed=0, progress=False, symmetry=SymmetryProjector(templates))
    s = batch.to_structures()
    assert SpacegroupAnalyzer(s[0], symprec=0.1).get_space_group_number() == 225
    assert SpacegroupAnalyzer(s[2], symprec=0.1).get_space_group_number() == 62
    assert len(s[0].composition) == 2 and len(s[2].composition) == 3     # the species pattern, new elements
    with pytest.raises(ValueError, match="Wyckoff template has 2"):
        sampler.sample(model, torch.tensor([3, 5, 20]), seed=0, progress=False, symmetry=SymmetryProjector(templates))


def test_templates_from_the_bundled_train_split():
    templates = templates_for(225, max_templates=10)
    assert 1 <= len(templates) <= 10
    assert all(t.space_group == 225 and t.num_atoms <= 20 and t.source.startswith("mp-") for t in templates)
    with pytest.raises(ValueError, match="1..230"):
        templates_for(231)


def test_generate_with_enforce_symmetry_hits_the_space_group_and_checks_its_input():
    import mattergen_kit as mk
    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

    model = mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    crystals = model.generate(4, seed=0, steps=8, conditions={"space_group": 62}, guidance_scale=1.0,
                              enforce_symmetry=True, progress=False)
    groups = [SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() for s in crystals]
    # exactly Pnma, or a supergroup when an 8-step sample lands on higher symmetry by chance (every supergroup of
    # Pnma, point group mmm, has a number ≥ 47); the unconstrained sampler makes mostly P1
    assert groups.count(62) >= 3 and min(groups) >= 47, groups
    with pytest.raises(ValueError, match="needs a space_group condition"):
        model.generate(2, seed=0, steps=4, conditions={"band_gap": 1.0}, enforce_symmetry=True, progress=False)
    with pytest.raises(ValueError, match="formula"):
        model.generate(2, seed=0, steps=4, conditions={"space_group": 62}, formula="CaTiO3", enforce_symmetry=True,
                       progress=False)
    with pytest.raises(ValueError, match="has no Wyckoff template|no Wyckoff template of space group 62 has 3"):
        model.generate(2, seed=0, steps=4, conditions={"space_group": 62}, num_atoms=3, enforce_symmetry=True,
                       progress=False)


def test_cli_enforce_symmetry_needs_a_space_group(tmp_path, capsys):
    from mattergen_kit.cli import main

    code = main(["generate", "--num", "2", "--steps", "4", "--out", str(tmp_path / "o"), "--enforce-symmetry",
                 "--condition", "band_gap=1.0"])
    assert code != 0 and "--enforce-symmetry needs --condition space_group" in capsys.readouterr().err


def test_cli_remask_rate_is_checked_and_used(tmp_path, capsys):
    import json

    from mattergen_kit.cli import main

    assert main(["generate", "--num", "2", "--steps", "4", "--out", str(tmp_path / "bad"), "--remask-rate", "-1"]) != 0
    assert "--remask-rate must be >= 0" in capsys.readouterr().err
    assert main(["generate", "--num", "2", "--steps", "6", "--out", str(tmp_path / "ok"), "--seed", "0",
                 "--remask-rate", "4", "--no-picture"]) == 0
    assert json.loads((tmp_path / "ok" / "manifest.json").read_text())["settings"]["remask_rate"] == 4.0


def test_enforce_symmetry_with_a_chemical_system_uses_templates_it_can_fill():
    import mattergen_kit as mk
    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

    model = mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    crystals = model.generate(3, seed=1, steps=6, conditions={"space_group": 225, "chemical_system": "Na-Cl"},
                              guidance_scale=1.0, enforce_symmetry=True, progress=False)
    for s in crystals:   # only templates with ≤ 2 species fit Na-Cl: every crystal stays in the system, in Fm-3m
        assert {e.symbol for e in s.composition} <= {"Na", "Cl"}
        # Fm-3m or a supergroup reached by chance in 6 steps (Pm-3m, Im-3m): all keep the point group m-3m
        assert SpacegroupAnalyzer(s, symprec=0.1).get_point_group_symbol() == "m-3m"
