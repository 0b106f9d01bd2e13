"""Property registry, embeddings, adapter and condition dropout (mattergen_kit/conditioning)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mattergen_kit.conditioning import (PROPERTIES, Adapter, PropertySpec, attach_adapter, check_conditions,
                                        drop_conditions, get_spec)
from mattergen_kit.conditioning.properties import NUM_ELEMENTS
from mattergen_kit.data import CrystalBatch
from mattergen_kit.model import CrystalDenoiser


@pytest.fixture(scope="module")
def batch(real_rows, real_structures):
    props = {"band_gap": torch.tensor(real_rows["band_gap"].to_numpy(np.float32)[:6]),
             "chemical_system": ["-".join(sorted({e.symbol for e in s.composition.elements})) for s in real_structures[:6]]}
    return CrystalBatch.from_structures(real_structures[:6], properties=props)


def fitted_specs(real_rows, names=("band_gap", "space_group", "chemical_system", "e_above_hull")):
    cols = {"band_gap": "band_gap", "e_above_hull": "e_above_hull", "formation_energy_per_atom": "formation_energy_per_atom"}
    return [get_spec(n).fit_normalisation(real_rows[cols[n]]) if n in cols else get_spec(n) for n in names]


def model_with_trained_trunk(seed=0):
    torch.manual_seed(seed)
    model = CrystalDenoiser(hidden_dim=32, num_layers=2, num_freqs=4, time_dim=16)
    return model.eval()


def outputs_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip((a.type_logits, a.coord_score, a.lattice_score),
                                                (b.type_logits, b.coord_score, b.lattice_score)))


def test_registry_has_the_stable_names():
    assert list(PROPERTIES) == ["chemical_system", "space_group", "band_gap", "formation_energy_per_atom",
                                "e_above_hull", "hhi_production", "magnetic_density", "bulk_modulus"]
    assert PROPERTIES["magnetic_density"].ml_label and PROPERTIES["bulk_modulus"].log10
    with pytest.raises(ValueError, match="unknown property 'dos'.*band_gap"):
        get_spec("dos")


def test_normalisation_stats_are_nanmean_and_population_std(real_rows):
    spec = get_spec("band_gap").fit_normalisation(real_rows["band_gap"])
    y = real_rows["band_gap"].dropna().to_numpy()
    assert spec.mean == pytest.approx(y.mean()) and spec.std == pytest.approx(y.std(ddof=0) + 1e-5)
    bm = get_spec("bulk_modulus").fit_normalisation([10.0, 100.0, float("nan"), -1.0])  # log10; ≤ 0 is absent
    assert bm.mean == pytest.approx(1.5) and bm.std == pytest.approx(0.5 + 1e-5)
    enc, present = bm.encode([10.0, None, 1000.0], 3)
    assert present.tolist() == [True, False, True]
    assert enc[0].item() == pytest.approx(-1.0, abs=1e-4) and enc[2].item() == pytest.approx(3.0, abs=1e-3)


def test_encodings_of_categorical_and_chemical_system():
    sg, present = get_spec("space_group").encode([225, None, 1.0, float("nan")], 4)
    assert sg.tolist()[:3] == [224, -1, 0] and present.tolist() == [True, False, True, False]
    hot, present = get_spec("chemical_system").encode(["Li-Fe-P-O", None], 2)
    assert hot.shape == (2, NUM_ELEMENTS) and hot[0].sum() == 4 and present.tolist() == [True, False]
    from mattergen_kit.diffusion.atom_types import ALLOWED_Z
    assert {ALLOWED_Z[i] for i in torch.nonzero(hot[0]).flatten().tolist()} == {3, 26, 15, 8}


@pytest.mark.parametrize("conditions, message", [
    ({"band_gap": -0.5}, r"band_gap = -0.5 eV is out of range: it must be ≥ 0.0"),
    ({"space_group": 231}, r"space_group = 231 is outside 1–230"),
    ({"space_group": 0}, r"space_group = 0 is outside 1–230"),
    ({"space_group": 2.5}, r"space_group must be an integer"),
    ({"chemical_system": "Li-Xx-O"}, r"'Xx' is not an element symbol"),
    ({"chemical_system": "Li-Xe"}, r"Xe cannot be generated"),
    ({"e_above_hull": float("nan")}, r"e_above_hull must be a finite number"),
    ({"bulk_modulus": 0.0}, r"bulk_modulus = 0.0 GPa is out of range: it must be > 0.0"),
    ({"magnetic_density": 0.1}, r"not trained on 'magnetic_density'; it can be conditioned on: band_gap, space_group"),
])
def test_check_conditions_errors(real_rows, conditions, message):
    specs = {s.name: s for s in fitted_specs(real_rows)}
    specs["bulk_modulus"] = get_spec("bulk_modulus").fit_normalisation([10.0, 100.0])
    with pytest.raises(ValueError, match=message):
        check_conditions(conditions, specs, guidance_scale=2.0)


def test_check_conditions_guidance_and_unconditioned_models(real_rows):
    specs = {s.name: s for s in fitted_specs(real_rows)}
    with pytest.raises(ValueError, match="guidance_scale must be ≥ 0"):
        check_conditions({"band_gap": 1.0}, specs, guidance_scale=-1.0)
    with pytest.raises(ValueError, match=r"no property conditioning, so conditions \['band_gap'\] would be ignored"):
        check_conditions({"band_gap": 1.0}, {}, guidance_scale=0.0)
    with pytest.raises(ValueError, match="no property conditioning, so guidance_scale=2.0"):
        check_conditions(None, {}, guidance_scale=2.0)
    with pytest.raises(ValueError, match="needs conditions"):
        check_conditions({}, specs, guidance_scale=2.0)
    assert check_conditions({"chemical_system": "O-Li-Fe", "space_group": 225.0}, specs, 2.0) == {
        "chemical_system": "Fe-Li-O", "space_group": 225}
    assert check_conditions(None, {}, 0.0) == {}


def test_fresh_adapter_reproduces_the_base_model_exactly(batch, real_rows):
    base = model_with_trained_trunk()
    t = torch.linspace(0.1, 0.9, batch.num_crystals)
    ref = base(batch, t)
    attach_adapter(base, fitted_specs(real_rows))
    conditions = {"band_gap": batch.properties["band_gap"], "space_group": 225, "chemical_system": "Li-Fe-P-O"}
    for kwargs in [dict(), dict(conditions=conditions),
                   dict(conditions=conditions, use_condition=torch.tensor([True, False] * 3))]:
        assert outputs_equal(base(batch, t, **kwargs), ref), kwargs


def test_null_embeddings_and_use_condition(batch, real_rows):
    model = model_with_trained_trunk()
    adapter = attach_adapter(model, fitted_specs(real_rows))
    torch.manual_seed(1)
    for m in adapter.mixin:  # a "trained" adapter: non-zero mix-in
        torch.nn.init.normal_(m.weight, std=0.3)
    t = torch.full((batch.num_crystals,), 0.5)
    uncond = model(batch, t)                                              # no conditions: all null
    cond = {"band_gap": batch.properties["band_gap"], "space_group": 225}
    off = model(batch, t, conditions=cond, use_condition=torch.zeros(batch.num_crystals, dtype=torch.bool))
    assert outputs_equal(off, uncond)                                     # use_condition=False = unconditional
    absent = {"band_gap": torch.full((batch.num_crystals,), float("nan")), "space_group": [None] * batch.num_crystals}
    assert outputs_equal(model(batch, t, conditions=absent), uncond)      # NaN / None = null embedding
    on = model(batch, t, conditions=cond)
    assert not torch.allclose(on.type_logits, uncond.type_logits)
    # a subset: band gap only differs from band gap + space group, and each crystal only sees its own labels
    only_gap = model(batch, t, conditions={"band_gap": batch.properties["band_gap"]})
    assert not torch.allclose(only_gap.type_logits, on.type_logits)
    mixed = model(batch, t, conditions=cond, use_condition=torch.tensor([True, False] * 3))
    first = batch.batch_idx == 0
    second = batch.batch_idx == 1
    assert torch.allclose(mixed.type_logits[first], on.type_logits[first], atol=1e-5)
    assert torch.allclose(mixed.type_logits[second], uncond.type_logits[second], atol=1e-5)


def test_a_trained_model_can_be_copied_after_a_forward_pass(batch, real_rows):
    import copy

    model = model_with_trained_trunk().train()
    attach_adapter(model, fitted_specs(real_rows))
    out = model(batch, torch.full((6,), 0.5), conditions={"band_gap": batch.properties["band_gap"]})
    out.type_logits.sum().backward()
    twin = copy.deepcopy(model)                      # e.g. an EMA copy: no cached graph tensors on the adapter
    assert all(torch.equal(a, b) for a, b in zip(twin.parameters(), model.parameters()))


def test_adapter_rejects_unknown_properties_and_round_trips(batch, real_rows):
    model = model_with_trained_trunk()
    adapter = attach_adapter(model, fitted_specs(real_rows, ("band_gap",)))
    with pytest.raises(ValueError, match=r"not trained on \['space_group'\]; it knows \['band_gap'\]"):
        model(batch, torch.full((6,), 0.5), conditions={"space_group": 225})
    again = Adapter.from_config(adapter.config_dict())
    again.load_state_dict(adapter.state_dict())
    assert again.specs["band_gap"] == adapter.specs["band_gap"]
    with pytest.raises(ValueError, match="no normalisation stats"):
        Adapter([get_spec("band_gap")], 32, 2)


def test_drop_conditions_independent_mode():
    n = 20000
    gen = torch.Generator().manual_seed(0)
    conds = {"band_gap": torch.ones(n), "chemical_system": ["Li-O"] * n}
    dropped = drop_conditions(conds, 0.2, gen, mode="independent")
    gap_dropped = torch.isnan(dropped["band_gap"])
    sys_dropped = torch.tensor([v is None for v in dropped["chemical_system"]])
    assert abs(gap_dropped.float().mean().item() - 0.2) < 0.015
    assert abs(sys_dropped.float().mean().item() - 0.2) < 0.015
    both = (gap_dropped & sys_dropped).float().mean().item()
    assert abs(both - 0.04) < 0.01                    # independent: P(both) = 0.2², not 0.2
    assert torch.equal(conds["band_gap"], torch.ones(n))   # the input is not modified
    assert not torch.isnan(drop_conditions(conds, 0.0, mode="independent")["band_gap"]).any()
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        drop_conditions(conds, 1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        drop_conditions(conds, 0.2, mode="joint")


def test_drop_conditions_subsets_mode_trains_every_subset():
    """p of the crystals keep nothing; the others keep a random k-subset, k ~ U{1..P} (conditions.py)."""
    n, P, p = 40000, 8, 0.2
    gen = torch.Generator().manual_seed(1)
    conds = {f"x{j}": torch.full((n,), float(j)) for j in range(P)}
    kept = torch.stack([~torch.isnan(v) for v in drop_conditions(conds, p, gen).values()], 1)   # (n, P)
    size = kept.sum(1)
    assert abs((size == 0).float().mean().item() - p) < 0.01                          # the unconditional branch
    for k in range(1, P + 1):                                                         # (1 − p)/P for each size
        assert abs((size == k).float().mean().item() - (1 - p) / P) < 0.01
    alone = (kept[:, 0] & (size == 1)).float().mean().item()
    assert abs(alone - (1 - p) / P ** 2) < 0.004                                      # x0 alone: 1.25 %
    single = drop_conditions({"band_gap": torch.ones(n)}, p, gen)["band_gap"]          # P = 1: plain dropout
    assert abs(torch.isnan(single).float().mean().item() - p) < 0.01


def test_custom_categorical_property():
    spec = PropertySpec("phase", "categorical", categories=["alpha", "beta"])
    idx, present = spec.encode(["beta", "gamma", None], 3)
    assert idx.tolist() == [1, -1, -1] and present.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="'gamma' is not one of the categories the model knows: 'alpha', 'beta'"):
        spec.check("gamma")
    numbered = PropertySpec("phase", "categorical", categories=["1", "2b"])
    assert numbered.check(1) == "1"                     # the CLI parses "phase=1" as an int
