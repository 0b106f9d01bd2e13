"""The kit's port of MatterGen's denoiser against MatterGen 1.0.3's own code (tools/make_mattergen_reference.py).

* every state-dict key and shape of the nine released configs at FULL size (built on the meta device, no
  180 MB file needed) maps onto the port, none missing, none unexpected;
* on the committed random-weight fixture (six released configs at width 16, in the released layout), the
  port's atom-type logits, coordinate scores and lattice scores equal the reference's to ≤ 1e-5 relative
  in float32, for t ∈ {0.01, 0.5, 0.99}, with and without each kind of condition;
* classifier-free guidance: γ·cond + (1 − γ)·uncond equals MatterGen's GuidedPredictorCorrector;
* a config the port cannot honour is refused, naming the field.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mattergen_kit.model.mattergen import (UnsupportedConfigError, build_denoiser, denoiser_state_dict,
                                           parse_config, raw_outputs, resolve_property_name)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "mattergen_reference"
RELEASED_CONFIGS = FIXTURE / "released_configs"   # the nine released config.yaml files, unchanged (MIT)
_KEYS = json.loads((FIXTURE / "state_dict_keys.json").read_text())
# per model: the mattergen_base key list, plus its extra keys, minus its missing ones
KEYS = {name: {**{k: v for k, v in _KEYS["common"].items() if k not in entry["missing"]}, **entry["extra"]}
        for name, entry in _KEYS["models"].items()}
CASES = json.loads((FIXTURE / "cases.json").read_text())
NAMES = sorted(KEYS)
RTOL = 1e-5


def _release_config(name: str) -> Path:
    return RELEASED_CONFIGS / f"{name}.yaml"


def test_nine_released_configs_are_covered():
    assert len(NAMES) == 9
    assert {"mattergen_base", "space_group", "chemical_system", "dft_band_gap", "ml_bulk_modulus"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_full_size_state_dict_maps_exactly(name):
    model = build_denoiser(_release_config(name), device="meta")
    port = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {k[len("diffusion_module.model."):]: shape for k, shape in KEYS[name].items()}
    assert all(k.startswith("diffusion_module.model.") for k in KEYS[name]), "keys outside the denoiser"
    missing, unexpected = sorted(set(expected) - set(port)), sorted(set(port) - set(expected))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    wrong = {k: (port[k], expected[k]) for k in expected if port[k] != expected[k]}
    assert not wrong, f"shape mismatch: {list(wrong.items())[:5]}"
    if name == "mattergen_base":      # the README's 44.6M-parameter GemNet-T
        assert sum(p.numel() for p in model.parameters()) == 44_562_043


_MODELS: dict = {}


def fixture_model(name: str):
    """The port, built from the fixture's config.yaml and loaded strictly from its last.ckpt."""
    if name not in _MODELS:
        folder = FIXTURE / name
        model = build_denoiser(folder / "config.yaml")
        checkpoint = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        model.load_state_dict(denoiser_state_dict(checkpoint["state_dict"]), strict=True)
        _MODELS[name] = model.eval()
    return _MODELS[name]


@pytest.fixture(scope="module")
def reference():
    with np.load(FIXTURE / "reference.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _batch(ref):
    return (torch.from_numpy(ref["pos"]), torch.from_numpy(ref["cell"]), torch.from_numpy(ref["atomic_numbers"]),
            torch.from_numpy(ref["num_atoms"]))


def _assert_close(actual: torch.Tensor, expected: np.ndarray, what: str):
    expected = torch.from_numpy(expected)
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().clamp_min(1e-12)
    err = float((actual - expected).abs().max() / scale)
    assert err <= RTOL, f"{what}: max |port − reference| / max |reference| = {err:.2e}"


def _conditions(case, guided_branch: bool = False):
    conds = dict(case["conditions"])
    if case["unconditional_rows"] is not None:
        conds = {p: [None if unc else v for v, unc in zip(vals, case["unconditional_rows"])]
                 for p, vals in conds.items()}
    return conds


def test_fixture_batch_is_what_the_issue_asks(reference):
    n = reference["num_atoms"].tolist()
    assert 1 in n and 20 in n and len(n) >= 4
    assert (reference["atomic_numbers"] == 101).any() and (reference["atomic_numbers"] < 101).any()
    assert sorted({c["t"] for c in CASES["cases"]}) == [0.01, 0.5, 0.99]
    kinds = {p for c in CASES["cases"] for p in c["conditions"]}
    assert {"space_group", "chemical_system", "dft_band_gap"} <= kinds
    total = sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file())
    assert total <= 2_000_000, f"fixture is {total} bytes"


@pytest.mark.parametrize("case", CASES["cases"], ids=[c["tag"] for c in CASES["cases"]])
def test_raw_outputs_and_scores_equal_reference(case, reference):
    model = fixture_model(case["model"])
    pos, cell, z, n = _batch(reference)
    t = torch.full((n.numel(),), case["t"])
    out = raw_outputs(model, pos, cell, z, n, t, _conditions(case))
    tag = case["tag"]
    _assert_close(out["atomic_numbers"], reference[f"{tag}/atomic_numbers"], f"{tag} type logits")
    _assert_close(out["pos"], reference[f"{tag}/pos"], f"{tag} coordinate output")
    _assert_close(out["cell"], reference[f"{tag}/cell"], f"{tag} lattice output")


@pytest.mark.parametrize("case", [c for c in CASES["cases"] if c["conditions"] and c["unconditional_rows"] is None
                                  and c["t"] == 0.5],
                         ids=lambda c: c["tag"])
def test_guidance_is_gamma_cond_plus_one_minus_gamma_uncond(case, reference):
    gamma = CASES["guidance_scale"]
    model = fixture_model(case["model"])
    pos, cell, z, n = _batch(reference)
    t = torch.full((n.numel(),), case["t"])
    cond = raw_outputs(model, pos, cell, z, n, t, case["conditions"])
    uncond = raw_outputs(model, pos, cell, z, n, t, None)
    for field in ("atomic_numbers", "pos", "cell"):
        guided = gamma * cond[field] + (1 - gamma) * uncond[field]
        expected = reference[f"{case['tag']}/guided_{field}"]
        if field != "atomic_numbers":      # MatterGen guides the scores (output / std): same factor on both
            expected = expected * (reference[f"{case['tag']}/{field}"] / reference[f"{case['tag']}/score_{field}"])
        _assert_close(guided, expected, f"{case['tag']} guided {field}")


def test_scores_are_outputs_over_mattergen_std(reference):
    """MatterGen's score = raw output / std(t): pos std σ(t; N) of the wrapped VE SDE, cell std of the VP SDE."""
    from mattergen_kit.diffusion.coords import WrappedVESDE
    from mattergen_kit.diffusion.lattice import LatticeVPSDE

    n = torch.from_numpy(reference["num_atoms"])
    bidx = torch.repeat_interleave(torch.arange(n.numel()), n)
    for case in CASES["cases"]:
        t = torch.full((n.numel(),), case["t"])
        tag = case["tag"]
        sigma = WrappedVESDE().sigma(t, n)[bidx][:, None]
        std = LatticeVPSDE().std(t, n)[:, None, None]
        _assert_close(torch.from_numpy(reference[f"{tag}/pos"]) / sigma, reference[f"{tag}/score_pos"], f"{tag} σ")
        _assert_close(torch.from_numpy(reference[f"{tag}/cell"]) / std, reference[f"{tag}/score_cell"], f"{tag} std")


def test_conditions_change_the_output_and_names_map_both_ways(reference):
    model = fixture_model("dft_band_gap")
    pos, cell, z, n = _batch(reference)
    t = torch.full((n.numel(),), 0.5)
    a = raw_outputs(model, pos, cell, z, n, t, {"dft_band_gap": 1.0})
    b = raw_outputs(model, pos, cell, z, n, t, {"band_gap": 1.0})           # the kit's name
    c = raw_outputs(model, pos, cell, z, n, t, {"band_gap": 3.0})
    assert torch.equal(a["atomic_numbers"], b["atomic_numbers"])
    assert not torch.allclose(a["atomic_numbers"], c["atomic_numbers"])
    assert resolve_property_name("bulk_modulus", ["ml_bulk_modulus"]) == "ml_bulk_modulus"
    with pytest.raises(ValueError, match=r"dft_band_gap \(kit: band_gap\)"):
        raw_outputs(model, pos, cell, z, n, t, {"space_group": 225})


def _model_cfg(cfg):
    return cfg["lightning_module"]["diffusion_module"]["model"]


@pytest.mark.parametrize("edit, field", [
    (lambda c: _model_cfg(c)["gemnet"].__setitem__("rbf", {"name": "spherical_bessel"}), "gemnet.rbf"),
    (lambda c: _model_cfg(c)["gemnet"].__setitem__("activation", "siqu"), "gemnet.activation"),
    (lambda c: _model_cfg(c).__setitem__("atom_type_diffusion", "uniform"), "atom_type_diffusion"),
    (lambda c: _model_cfg(c)["gemnet"].__setitem__("otf_graph", False), "gemnet.otf_graph"),
    (lambda c: _model_cfg(c)["gemnet"].__setitem__("new_option", 1), "gemnet.new_option"),
    (lambda c: _model_cfg(c).__setitem__("property_embeddings", {"dft_band_gap": {}}), "model.property_embeddings"),
])
def test_config_the_port_cannot_honour_is_refused_naming_the_field(edit, field):
    cfg = yaml.safe_load(_release_config("mattergen_base").read_text())
    parse_config(cfg)                                  # the released one is accepted
    bad = copy.deepcopy(cfg)
    edit(bad)
    with pytest.raises(UnsupportedConfigError, match=field.replace(".", r"\.")):
        parse_config(bad)


def test_one_predictor_corrector_step_equals_the_reference(reference, monkeypatch):
    """Step i = 500 of the 1000-step guided sampler (γ = 2, dft_band_gap per crystal) from the fixed batch with
    every atom masked, run by the kit's PredictorCorrectorSampler on the loaded model with MatterGen's recorded
    Gaussian noise replayed in the same order (coordinate and lattice corrector, then predictor). The atom types
    are drawn differently (MatterGen: Categorical over all atoms; the kit: multinomial over the masked ones),
    so for them the posterior probabilities and their argmax (the step's mean) are compared."""
    import tqdm.auto

    from mattergen_kit.mattergen_models.loader import load_mattergen
    from mattergen_kit.sampling import PredictorCorrectorSampler

    model = load_mattergen(FIXTURE / "dft_band_gap")
    step = int(reference["step/index"])
    pos, cell, z, n = _batch(reference)
    queue = [torch.from_numpy(reference[f"step/noise_{k}"]) for k in range(4)]
    assert f"step/noise_4" not in reference
    diffusion = model.diffusion
    monkeypatch.setattr(diffusion.coords, "sample_prior", lambda num_atoms, generator=None: pos.clone())
    monkeypatch.setattr(diffusion.lattice, "sample_prior", lambda num_atoms, generator=None: cell.clone())

    def replay(*size, generator=None, device=None, dtype=None, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        noise = queue.pop(0)
        if tuple(noise.shape) == (shape[0], 1, 1) and shape[1:] == (3, 3):
            # MatterGen's LatticeAncestralSamplingPredictor draws randn_like(x_coeff), x_coeff being (B, 1, 1):
            # ONE scalar s per crystal, made "symmetric" into s·[[1, √2, √2], [√2, 1, √2], [√2, √2, 1]]. The
            # kit draws a full (B, 3, 3) Z and symmetrises it; Z = s·ones gives exactly MatterGen's matrix
            # (docs/mattergen_compat.md: the one sampler difference, in the predictor's lattice noise).
            noise = noise.expand(shape)
        assert tuple(noise.shape) == shape, "the kit draws its noise in another order or shape than MatterGen"
        return noise.to(dtype or noise.dtype)

    seen_probs = []
    multinomial = torch.multinomial

    def capture(probs, num_samples, *args, **kwargs):
        seen_probs.append(probs.clone())
        return multinomial(probs, num_samples, *args, **kwargs)

    monkeypatch.setattr(torch, "randn", replay)
    monkeypatch.setattr(torch, "multinomial", capture)
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda iterable, **kwargs: [step])
    sampler = PredictorCorrectorSampler(diffusion, num_steps=1000)
    conditions = {"dft_band_gap": [0.5, 1.5, 3.0, 0.0]}
    out = sampler.sample(model.denoiser, n, seed=0, guidance_scale=CASES["guidance_scale"], conditions=conditions,
                         progress=False)
    monkeypatch.undo()
    assert not queue, "the kit drew fewer Gaussian noises than MatterGen"
    assert float((out.lattice - cell).abs().max()) > 1e-3 and float((out.frac_coords - pos).abs().max()) > 1e-3
    _assert_close(out.frac_coords, reference["step/mean_pos"], "coordinates after the step")
    _assert_close(out.lattice, reference["step/mean_cell"], "lattice after the step")
    assert len(seen_probs) == 1
    _assert_close(seen_probs[0].double(), reference["step/posterior_probs"], "atom-type posterior")
    assert torch.equal(out.atom_types, torch.from_numpy(reference["step/mean_atomic_numbers"]))
