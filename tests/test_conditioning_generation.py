"""Conditioned generation: errors before sampling, γ = 0 is the unconditional sampler, chemical-system masking,
fixed formula / number of atoms through generate()."""

from __future__ import annotations

import pytest
import torch

from mattergen_kit.conditioning import attach_adapter, get_spec
from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT, GenerativeModel, generate, load_model
from mattergen_kit.model import CrystalDenoiser
from mattergen_kit.sampling import NumAtomsPrior
from mattergen_kit.training import diffusion_from_config

STEPS = 4


def tiny_model(conditioned: bool) -> GenerativeModel:
    torch.manual_seed(0)
    denoiser = CrystalDenoiser(hidden_dim=16, num_layers=2, num_freqs=4, time_dim=16)
    if conditioned:
        specs = [get_spec("band_gap").fit_normalisation([0.0, 1.0, 3.0]), get_spec("space_group"),
                 get_spec("chemical_system")]
        adapter = attach_adapter(denoiser, specs)
        for m in adapter.mixin:  # as if trained: the adapter changes the outputs
            torch.nn.init.normal_(m.weight, std=0.5)
    prior = NumAtomsPrior([0, 0, 0.5, 0, 0.5] + [0] * 16)
    return GenerativeModel(denoiser.eval(), diffusion_from_config({"density": 0.05644}), prior)


@pytest.fixture(scope="module")
def cond_model():
    return tiny_model(True)


@pytest.fixture(scope="module")
def base_model():
    return tiny_model(False)


def types(batch):
    return [sorted(set(s.composition.elements)) for s in batch.to_structures()]


@pytest.mark.parametrize("kwargs, message", [
    (dict(conditions={"magnetic_density": 0.1}), r"not trained on 'magnetic_density'; it can be conditioned on: band_gap, space_group, chemical_system"),
    (dict(conditions={"band_gap": -1.0}, guidance_scale=2.0), r"band_gap = -1.0 eV is out of range"),
    (dict(conditions={"space_group": 231}, guidance_scale=2.0), r"space_group = 231 is outside 1–230"),
    (dict(conditions={"chemical_system": "Li-Qq"}, guidance_scale=2.0), r"'Qq' is not an element symbol"),
    (dict(conditions={"band_gap": 1.0}, guidance_scale=-0.5), r"guidance_scale must be ≥ 0"),
    (dict(conditions={"chemical_system": "Li-O"}, allowed_elements=["Fe"]), r"shares no element with allowed_elements"),
])
def test_conditioned_model_errors_before_sampling(cond_model, kwargs, message, monkeypatch):
    import mattergen_kit.sampling.pc_sampler as pc

    monkeypatch.setattr(pc.PredictorCorrectorSampler, "sample", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(ValueError, match=message):
        cond_model.sample(2, seed=0, steps=STEPS, progress=False, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(conditions={"band_gap": 1.0}), r"no property conditioning, so conditions \['band_gap'\] would be ignored"),
    (dict(guidance_scale=2.0), r"no property conditioning, so guidance_scale=2.0 would be ignored"),
])
def test_base_model_rejects_conditions(base_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        base_model.sample(2, seed=0, steps=STEPS, progress=False, **kwargs)


def test_gamma_zero_is_the_unconditional_sampler_and_gamma_steers(cond_model):
    kw = dict(seed=3, steps=STEPS, progress=False)
    uncond = cond_model.sample(3, **kw)
    g0 = cond_model.sample(3, conditions={"band_gap": 3.0, "space_group": 225}, guidance_scale=0.0, **kw)
    g2 = cond_model.sample(3, conditions={"band_gap": 3.0, "space_group": 225}, guidance_scale=2.0, **kw)
    assert torch.equal(uncond.frac_coords, g0.frac_coords) and torch.equal(uncond.lattice, g0.lattice)
    assert torch.equal(uncond.atom_types, g0.atom_types)
    assert not torch.allclose(uncond.lattice, g2.lattice)


def test_guided_network_output_is_u_plus_gamma_c_minus_u(cond_model, real_structures):
    """One guided call of the sampler on a real batch: out = u + γ (c − u), u = all null, c = conditioned;
    with a fresh (zero mix-in) adapter c = u up to float rounding, so guidance changes nothing."""
    from mattergen_kit.data import CrystalBatch
    from mattergen_kit.sampling import PredictorCorrectorSampler

    batch = CrystalBatch.from_structures(real_structures[:4])
    t = torch.full((4,), 0.6)
    sampler = PredictorCorrectorSampler(cond_model.diffusion, num_steps=2)
    cond = PredictorCorrectorSampler._slice_conditions({"band_gap": 3.0, "space_group": 225}, 0, 4, 4, "cpu")
    with torch.no_grad():
        u = cond_model.denoiser(batch, t)
        c = cond_model.denoiser(batch, t, conditions=cond)
    guided = sampler._denoise(cond_model.denoiser, batch, t, cond, 2.0, None)
    assert torch.allclose(guided.lattice_score, u.lattice_score + 2.0 * (c.lattice_score - u.lattice_score), atol=1e-4)
    assert (c.lattice_score - u.lattice_score).abs().max() > 1e-2                      # the trained adapter steers
    fresh = tiny_model(False)
    attach_adapter(fresh.denoiser, [get_spec("band_gap").fit_normalisation([0.0, 1.0, 3.0]), get_spec("space_group")])
    with torch.no_grad():
        u0 = fresh.denoiser(batch, t)
    g0 = sampler._denoise(fresh.denoiser, batch, t, cond, 2.0, None)
    assert torch.allclose(g0.lattice_score, u0.lattice_score, atol=1e-5)             # zero mix-in: no steering


def test_chemical_system_condition_keeps_samples_in_the_system(cond_model):
    batch = cond_model.sample(6, seed=1, steps=STEPS, progress=False, conditions={"chemical_system": "Li-Fe-P-O"},
                              guidance_scale=2.0, batch_size=4)
    allowed = {3, 26, 15, 8}
    assert set(batch.atom_types.tolist()) <= allowed                       # 0 samples leave the system
    per_crystal = cond_model.sample(2, seed=1, steps=STEPS, progress=False, guidance_scale=1.0,
                                    conditions={"chemical_system": ["Na-Cl", "Mg-O"]}, batch_size=1)
    zs = [set(s.atomic_numbers) for s in per_crystal.to_structures()]
    assert zs[0] <= {11, 17} and zs[1] <= {12, 8}


def test_fixed_formula_and_fixed_number_of_atoms(cond_model):
    batch = cond_model.sample(3, seed=0, steps=STEPS, progress=False, formula="Li2Fe2O4")
    assert [s.composition.formula for s in batch.to_structures()] == ["Li2 Fe2 O4"] * 3
    batch = cond_model.sample(3, seed=0, steps=STEPS, progress=False, num_atoms=[5, 5, 7])
    assert batch.num_atoms.tolist() == [5, 5, 7]
    assert cond_model.sample(3, seed=0, steps=STEPS, progress=False, num_atoms=6).num_atoms.tolist() == [6, 6, 6]
    with pytest.raises(ValueError, match="Xe cannot be generated|none of the allowed elements"):
        cond_model.sample(1, seed=0, steps=STEPS, progress=False, formula="XeF2")
    with pytest.raises(ValueError, match="either formula or fixed_atom_types"):
        cond_model.sample(1, seed=0, steps=STEPS, progress=False, formula="LiF", fixed_atom_types=[["Li", "F"]])
    with pytest.raises(ValueError, match="has 2 atoms but num_atoms"):
        cond_model.sample(1, seed=0, steps=STEPS, progress=False, formula="LiF", num_atoms=[3])


def test_the_shipped_conditioned_model_serves_every_property_and_none(monkeypatch):
    """The committed conditioned model: all eight properties, the base's sampler settings, used by generate()
    when conditions are given without a model; a chemical system keeps every sample inside it."""
    from mattergen_kit.conditioning import PROPERTIES

    model = load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    assert list(model.property_specs) == list(PROPERTIES)
    base = load_model()
    assert model.meta["base_sha256"] and model.meta["coherence_bias"] == base.meta["coherence_bias"]
    assert model.meta["labelled_train_crystals"]["bulk_modulus"] > 3000            # AFLOW DFT + CHGNet labels
    used = []
    monkeypatch.setattr(GenerativeModel, "generate",
                        lambda self, *a, **k: used.append(self.path) or [])
    generate(1, steps=STEPS, conditions={"band_gap": 1.0}, guidance_scale=2.0)
    assert used == [BUNDLED_CONDITIONED_CHECKPOINT]
    monkeypatch.undo()
    crystals = model.generate(3, seed=0, steps=STEPS, progress=False, guidance_scale=2.0,
                              conditions={"chemical_system": "Li-Mn-O", "space_group": 225})
    assert len(crystals) == 3 and all({e.symbol for e in c.composition} <= {"Li", "Mn", "O"} for c in crystals)


def save(model: GenerativeModel, path):
    from mattergen_kit.training import save_checkpoint

    meta = {"num_atoms_histogram": model.num_atoms_prior.probs.tolist() if hasattr(model.num_atoms_prior, "probs")
            else [0, 0, 0.5, 0, 0.5] + [0] * 16}
    if model.denoiser.adapter is not None:
        meta["adapter"] = model.denoiser.adapter.config_dict()
    return save_checkpoint(path, model.denoiser.config_dict(), model.denoiser.state_dict(), {"density": 0.05644}, meta)


def test_cli_conditions(tmp_path, cond_model, base_model, capsys):
    from mattergen_kit.cli import main

    ckpt, base = save(cond_model, tmp_path / "cond.pt"), save(base_model, tmp_path / "base.pt")
    common = ["--num", "2", "--steps", "3", "--no-picture", "--threads", "1"]
    rc = main(["generate", "--model", str(ckpt), "--out", str(tmp_path / "a"), "--condition", "band_gap=3.0",
               "--condition", "space_group=225", "--condition", "chemical_system=Li-O", "--guidance", "2", *common])
    assert rc == 0
    from pymatgen.core import Structure
    assert "--enforce-symmetry" in capsys.readouterr().err      # guidance alone rarely hits a space group: say so
    # an untrained 3-step model's cells may fail the writer's validity check (no CIF then): summary.csv lists every
    # sampled crystal, written or not, and every CIF that was written reads back
    import pandas as pd
    from pymatgen.core import Composition

    def sampled(folder):
        table = pd.read_csv(tmp_path / folder / "summary.csv")
        written = sorted((tmp_path / folder).glob("*.cif"))
        assert len(written) == int(table["written"].sum()) and all(Structure.from_file(c) for c in written)
        return table

    table = sampled("a")
    assert len(table) == 2 and all({e.symbol for e in Composition(f)} <= {"Li", "O"} for f in table.formula)
    rc = main(["generate", "--model", str(ckpt), "--out", str(tmp_path / "f"), "--formula", "LiF", *common])
    assert rc == 0 and list(sampled("f").formula) == ["LiF", "LiF"] and list(sampled("f").num_atoms) == [2, 2]
    rc = main(["generate", "--model", str(ckpt), "--out", str(tmp_path / "n"), "--num-atoms", "5", *common])
    assert rc == 0 and list(sampled("n").num_atoms) == [5, 5]
    capsys.readouterr()
    for args, message in [
        (["--model", str(ckpt), "--condition", "magnetic_density=0.1"], "not trained on 'magnetic_density'"),
        (["--model", str(ckpt), "--condition", "space_group=300"], "space_group = 300 is outside 1–230"),
        (["--model", str(base), "--condition", "band_gap=1"], "no property conditioning"),
        (["--model", str(base), "--guidance", "2"], "no property conditioning, so guidance_scale=2.0"),
        (["--model", str(ckpt), "--condition", "band_gap"], "--condition expects NAME=VALUE"),
        (["--model", str(ckpt), "--condition", "band_gap=1", "--guidance", "-1"], "--guidance must be >= 0"),
    ]:
        out = tmp_path / f"err{len(message)}"
        assert main(["generate", "--out", str(out), *args, *common]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()                                           # refused before anything is written
    # no --model: the conditioned bundled model, checked against its own property list
    assert main(["generate", "--out", str(tmp_path / "nomodel"), "--condition", "density=1", *common]) == 2
    assert "bulk_modulus" in capsys.readouterr().err                      # the error lists the model's properties
