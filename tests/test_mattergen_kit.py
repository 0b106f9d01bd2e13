"""MatterGen's released layout in the kit: load_mattergen → GenerativeModel, generate / conditions / guidance /
formula / trajectories, property names in both namings, corruption settings read from the config.

Runs on the random-weight models MatterGen's own code wrote in the released layout
(tests/data/mattergen_reference/, see tools/make_mattergen_reference.py); few steps, so fast."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mattergen_kit.generation import GenerativeModel
from mattergen_kit.mattergen_models.loader import MatterGenModel, diffusion_from_config, load_mattergen
from mattergen_kit.model.mattergen import UnsupportedConfigError

FIXTURE = Path(__file__).resolve().parent / "data" / "mattergen_reference"


@pytest.fixture(scope="module")
def base():
    return load_mattergen(FIXTURE / "mattergen_base")


@pytest.fixture(scope="module")
def band_gap():
    return load_mattergen(FIXTURE / "dft_band_gap")


def test_loads_as_the_kits_generative_model(base):
    assert isinstance(base, GenerativeModel) and isinstance(base, MatterGenModel)
    assert base.property_specs == {}
    assert base.meta["recommended_steps"] == 1000 and base.meta["mattergen_name"] == "mattergen_base"


def test_generate_unconditional_with_formula_and_trajectory(base):
    crystals = base.generate(2, seed=0, steps=4, num_atoms=4, progress=False)
    assert [len(s) for s in crystals] == [4, 4]
    again = base.generate(2, seed=0, steps=4, num_atoms=4, progress=False)
    assert [s.composition for s in again] == [s.composition for s in crystals]
    fixed = base.generate(2, seed=1, steps=4, formula="NaCl", progress=False)
    assert all(s.composition.reduced_formula == "NaCl" for s in fixed)
    batch, trajectory = base.sample(1, seed=2, steps=4, num_atoms=3, progress=False, return_trajectory=True,
                                    trajectory_every=2)
    assert trajectory.steps == [0, 2, 4] and batch.num_atoms.tolist() == [3]


def test_conditions_in_both_namings_and_guidance(band_gap):
    specs = band_gap.property_specs
    assert list(specs) == ["band_gap"] and "dft_band_gap" in specs
    kw = dict(seed=0, steps=3, num_atoms=5, progress=False)
    a = band_gap.sample(2, conditions={"dft_band_gap": 2.0}, guidance_scale=2.0, **kw)
    b = band_gap.sample(2, conditions={"band_gap": 2.0}, guidance_scale=2.0, **kw)
    u = band_gap.sample(2, **kw)
    assert torch.equal(a.frac_coords, b.frac_coords) and torch.equal(a.atom_types, b.atom_types)
    assert not torch.equal(a.frac_coords, u.frac_coords)
    with pytest.raises(ValueError, match="band_gap"):
        band_gap.generate(1, conditions={"space_group": 225}, guidance_scale=1.0, **kw)
    with pytest.raises(ValueError, match="band_gap"):
        band_gap.generate(1, conditions={"dft_band_gap": -1.0}, guidance_scale=1.0, **kw)


def test_denoiser_wrapper_guidance_is_the_kits_lerp(band_gap):
    """The kit's sampler makes one call on [uncond; cond] and combines u + γ(c − u); MatterGen lerps the scores."""
    from mattergen_kit.data import CrystalBatch

    noisy = CrystalBatch(torch.full((5,), 101), torch.rand(5, 3), torch.eye(3)[None] * 4.0, torch.tensor([5]))
    t = torch.tensor([0.5])
    net = band_gap.denoiser
    cond = net(noisy, t, {"band_gap": torch.tensor([1.5])}, torch.tensor([True]))
    unc = net(noisy, t, {"band_gap": torch.tensor([1.5])}, torch.tensor([False]))
    none = net(noisy, t, None, None)
    assert torch.equal(unc.type_logits, none.type_logits)
    assert not torch.allclose(cond.type_logits, unc.type_logits)


def test_space_group_and_chemical_system_models_sample():
    sg = load_mattergen(FIXTURE / "space_group")
    crystals = sg.generate(2, seed=0, steps=3, num_atoms=4, conditions={"space_group": 225}, guidance_scale=2.0,
                           progress=False)
    assert len(crystals) == 2
    cs = load_mattergen(FIXTURE / "chemical_system")
    crystals = cs.generate(2, seed=0, steps=3, num_atoms=4, conditions={"chemical_system": "Li-O"},
                           guidance_scale=2.0, progress=False)
    assert all({el.symbol for el in s.composition.elements} <= {"Li", "O"} for s in crystals)


def test_names_resolve_through_the_shared_folder(monkeypatch):
    monkeypatch.setenv("MATTERGEN_KIT_MODELS", str(FIXTURE))
    model = load_mattergen("ml_bulk_modulus")
    assert list(model.property_specs) == ["bulk_modulus"] and "ml_bulk_modulus" in model.property_specs


def test_corruption_settings_are_read_and_foreign_ones_refused():
    cfg = yaml.safe_load((FIXTURE / "released_configs" / "mattergen_base.yaml").read_text())
    diffusion = diffusion_from_config(cfg)
    assert abs(diffusion.lattice.density - 0.05771451654022283) < 1e-15
    bad = copy.deepcopy(cfg)
    bad["lightning_module"]["diffusion_module"]["corruption"]["sdes"]["pos"]["sigma_max"] = 3.0
    with pytest.raises(UnsupportedConfigError, match=r"sdes\.pos\.sigma_max"):
        diffusion_from_config(bad)
    bad = copy.deepcopy(cfg)
    d3pm = bad["lightning_module"]["diffusion_module"]["corruption"]["discrete_corruptions"]["atomic_numbers"]["d3pm"]
    d3pm["schedule"]["num_steps"] = 500
    with pytest.raises(UnsupportedConfigError, match="schedule.num_steps"):
        diffusion_from_config(bad)


def test_a_released_name_with_other_weights_is_refused_by_fingerprint(tmp_path):
    folder = tmp_path / "space_group"
    shutil.copytree(FIXTURE / "space_group", folder)
    (folder / "RANDOM_WEIGHTS").unlink()                   # claims to be the released space_group model
    with pytest.raises(ValueError, match="bytes"):
        load_mattergen(folder)


NINE_CONDITIONS = {"mattergen_base": {}, "mp_20_base": {}, "chemical_system": {"chemical_system": "Li-O"},
                   "space_group": {"space_group": 225}, "dft_band_gap": {"dft_band_gap": 1.0},
                   "dft_mag_density": {"dft_mag_density": 0.1}, "ml_bulk_modulus": {"ml_bulk_modulus": 100.0},
                   "chemical_system_energy_above_hull": {"chemical_system": "Li-O", "energy_above_hull": 0.05},
                   "dft_mag_density_hhi_score": {"dft_mag_density": 0.1, "hhi_score": 1000.0}}


def _small(cfg, width=8):
    """A released config at width 8 (the structure and every other setting unchanged)."""
    cfg = copy.deepcopy(cfg)
    model = cfg["lightning_module"]["diffusion_module"]["model"]
    model["hidden_dim"] = width
    g = model["gemnet"]
    g["atom_embedding"]["emb_size"] = g["emb_size_atom"] = g["emb_size_edge"] = g["latent_dim"] = width
    for emb in (model.get("property_embeddings_adapt") or {}).values():
        for part in ("conditional_embedding_module", "unconditional_embedding_module"):
            for key in ("hidden_dim", "d_model"):
                if key in emb[part]:
                    emb[part][key] = width
    return cfg


@pytest.mark.parametrize("name", sorted(NINE_CONDITIONS))
def test_each_of_the_nine_configs_loads_and_samples_in_the_released_layout(name, tmp_path):
    """All nine released configs (width 8, the kit's random initialisation) written in the released layout with a
    Lightning-style state dict, loaded by name through the shared-folder variable, sampled with their conditions."""
    from mattergen_kit.model.mattergen import STATE_DICT_PREFIX, build_denoiser

    cfg = _small(yaml.safe_load((FIXTURE / "released_configs" / f"{name}.yaml").read_text()))
    folder = tmp_path / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "RANDOM_WEIGHTS").write_text("test\n")
    torch.manual_seed(0)
    net = build_denoiser(cfg)
    state = {STATE_DICT_PREFIX + k: v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 0, "pytorch-lightning_version": "2.0.6"},
               folder / "checkpoints" / "last.ckpt")
    os.environ["MATTERGEN_KIT_MODELS"] = str(tmp_path)
    try:
        model = load_mattergen(name)
    finally:
        del os.environ["MATTERGEN_KIT_MODELS"]
    conditions = NINE_CONDITIONS[name]
    assert sorted(model.denoiser.property_names) == sorted(conditions)
    crystals = model.generate(1, seed=0, steps=2, num_atoms=3, conditions=conditions or None,
                              guidance_scale=2.0 if conditions else None, progress=False)
    assert len(crystals) == 1 and len(crystals[0]) == 3
