"""One sampling request, checked once (mattergen_kit/sampling/request.py), on the bundled models."""

import json
import warnings

import pytest
import torch

import mattergen_kit as mk
from mattergen_kit.generation import BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT, default_checkpoint
from mattergen_kit.sampling.request import DEFAULT_GUIDANCE_SCALE, SamplingRequest


@pytest.fixture(scope="module")
def conditioned():
    return mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)


@pytest.fixture(scope="module")
def base():
    return mk.load_model(BUNDLED_CHECKPOINT)


def test_conditions_without_gamma_are_guided_not_ignored(conditioned):
    """The bug of issue 23: conditions with no guidance_scale sampled the unconditional model (γ = 0)."""
    resolved = SamplingRequest(4, seed=0, conditions={"band_gap": 3.0}).resolve(conditioned)
    assert resolved.guidance_scale == DEFAULT_GUIDANCE_SCALE == 2.0
    assert resolved.batch_kwargs(0)["guidance_scale"] == 2.0
    assert resolved.conditions == {"band_gap": 3.0}
    assert SamplingRequest(4, seed=0).resolve(conditioned).guidance_scale == 0.0
    # the module-level generate picks the conditioned bundled model for a request with conditions
    assert default_checkpoint(SamplingRequest(4, conditions={"band_gap": 3.0})) == BUNDLED_CONDITIONED_CHECKPOINT
    assert default_checkpoint(SamplingRequest(4)) == BUNDLED_CHECKPOINT


def test_gamma_zero_with_conditions_says_so(conditioned):
    with pytest.warns(UserWarning, match="unconditional model: the conditions \\['band_gap'\\] are not used"):
        SamplingRequest(4, seed=0, conditions={"band_gap": 3.0}, guidance_scale=0).resolve(conditioned)
    # what γ = 0 still uses is not called unused: a chemical system masks the elements, templates carry the group
    with pytest.warns(UserWarning, match="the conditions \\['band_gap'\\] are not used"):
        SamplingRequest(4, seed=0, conditions={"band_gap": 3.0, "chemical_system": "Li-O"},
                        guidance_scale=0).resolve(conditioned)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        SamplingRequest(4, seed=0, conditions={"chemical_system": "Li-O"}, guidance_scale=0).resolve(conditioned)
        SamplingRequest(4, seed=0, conditions={"space_group": 225}, enforce_symmetry=True,
                        guidance_scale=0).resolve(conditioned)


@pytest.mark.parametrize("fields, error, match", [
    (dict(guidance_scale="2", conditions={"band_gap": 3.0}), TypeError, "guidance_scale must be a number"),
    (dict(guidance_scale=float("nan"), conditions={"band_gap": 3.0}), ValueError, "guidance_scale must be ≥ 0"),
    (dict(guidance_scale=2.0), ValueError, "needs conditions"),
    (dict(conditions={"band_gap": [1.0, 2.0, 3.0, 4.0, 5.0]}), ValueError, "has 5 entries but num=4"),
    (dict(conditions={"chemical_system": ["Li", "O"]}), ValueError, "has 2 entries but num=4"),
    (dict(num_atoms=2.5), ValueError, "num_atoms must be a whole number"),
    (dict(num_atoms=[3, 4]), ValueError, "num_atoms has 2 entries but num=4"),
    (dict(num_atoms=500), ValueError, "num_atoms must be between 1 and 200"),
    (dict(formula="Li3000O1500"), ValueError, "at most 200 atoms"),
    (dict(steps=1), ValueError, "steps must be at least 2"),
    (dict(batch_size=0), ValueError, "batch_size must be at least 1"),
    (dict(seed=-1), ValueError, "seed must be an integer"),
    (dict(seed=True), ValueError, "seed must be an integer"),
    (dict(type_temperature=0), ValueError, "type_temperature must be > 0"),
    (dict(conditions={"band_gap": 1e9}), ValueError, "far outside the labels this model was trained on"),
    (dict(conditions={"chemical_system": ["Li", "O", "Mn", "Fe"]}), ValueError, "give 'Li-O-Mn-Fe'"),
])
def test_bad_requests_fail_before_sampling_naming_the_field(conditioned, fields, error, match):
    with pytest.raises(error, match=match):
        SamplingRequest(4, **fields).resolve(conditioned)


def test_num_must_be_a_whole_number(base):
    with pytest.raises(ValueError, match="num must be a whole number"):
        SamplingRequest(2.5).resolve(base)
    with pytest.raises(TypeError, match="unknown sampling option.*guidance"):
        SamplingRequest.from_kwargs(4, guidance=2.0)


def test_a_base_model_refuses_conditions_instead_of_ignoring_them(base):
    with pytest.raises(ValueError, match="no property conditioning"):
        SamplingRequest(4, conditions={"band_gap": 3.0}).resolve(base)


def test_the_request_is_the_manifest_and_round_trips_through_json(base, conditioned):
    request = SamplingRequest(6, seed=3, steps=4, batch_size=4, conditions={"space_group": 225},
                              guidance_scale=1.5, num_atoms=[4, 5, 6, 7, 8, 9])
    again = SamplingRequest(**json.loads(json.dumps(request.to_dict())))
    a, b = request.resolve(conditioned), again.resolve(conditioned)
    assert a.base_seed == b.base_seed and a.num_atoms == b.num_atoms and a.conditions == b.conditions
    # the same request gives the same crystals, batch by batch (seed of batch `start` = base_seed + start)
    first = [p.batch for p in conditioned.iter_batches(a)]
    second = [p.batch for p in conditioned.iter_batches(b)]
    assert [p.num_crystals for p in first] == [4, 2]
    for x, y in zip(first, second):
        assert torch.equal(x.atom_types, y.atom_types) and torch.allclose(x.lattice, y.lattice)


def test_every_entry_point_uses_the_same_gamma_rule(conditioned, tmp_path):
    """mk.generate, the output-folder run (CLI) and the manifest agree: conditions without γ are guided at 2."""
    from mattergen_kit.outputs import RunManifest, generate_to_folder

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unconditional" warning: the conditions are used
        generate_to_folder(conditioned, tmp_path / "run", 2, seed=0, steps=3, conditions={"band_gap": 3.0},
                           picture=False, progress=False)
    settings = RunManifest.load(tmp_path / "run").settings
    assert settings["guidance_scale"] == 2.0  # the manifest records the resolved gamma
    assert SamplingRequest(**{k: v for k, v in settings.items() if k not in ("model", "model_sha256", "prefix")}
                           ).resolve(conditioned).guidance_scale == 2.0


def test_sampling_needs_no_pymatgen(tmp_path):
    """A lent GPU's image has torch but no pymatgen/ASE/spglib: loading a model and sampling must work there
    (tools/sample_on_device.py, tools/device_train_52.sh)."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('pymatgen', 'ase', 'spglib'):\n"
            "            raise ImportError('not on this machine: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from mattergen_kit.generation import load_model\n"
            "batch = load_model().sample(2, seed=0, steps=3, progress=False)\n"
            "print(int(batch.num_atoms.sum()) > 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"


def test_cells_beyond_the_training_sizes_warn_and_a_failure_says_what_was_asked(base, monkeypatch):
    """num_atoms=200 on a model trained on <= 20 atoms: a warning before sampling, and if the sampler meets NaN the
    error names the request, not an "untrained or diverged" checkpoint (issue 24)."""
    from mattergen_kit.sampling import NonFiniteSampleError, PredictorCorrectorSampler

    with pytest.warns(UserWarning, match="cells of 200 atoms are asked for, but this model was trained on cells of "
                                         "at most 20"):
        resolved = SamplingRequest(2, seed=0, steps=3, num_atoms=200, progress=False).resolve(base)

    def diverge(self, *args, **kwargs):
        raise NonFiniteSampleError(2, 3, 0.5, "lattice", "predictor")

    monkeypatch.setattr(PredictorCorrectorSampler, "sample", diverge)
    with pytest.raises(NonFiniteSampleError, match="asked for cells of up to 200 atoms \\(trained on at most 20\\)"):
        next(base.iter_batches(resolved))
    with pytest.raises(NonFiniteSampleError, match="untrained or diverged"):  # nothing unusual asked: the old message
        next(base.iter_batches(SamplingRequest(2, seed=0, steps=3, num_atoms=8, progress=False)))
