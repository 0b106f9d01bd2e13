"""GenerationPanel driven programmatically: widget values set, Generate clicked, the background thread joined.
Bundled model (unconditional) and a conditioned model (the bundled denoiser with an adapter); 3 sampler steps,
2-3 crystals."""
from __future__ import annotations

import base64
import io
import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from mattergen_kit.sampling.few_step import FAST_STEPS

pytest.importorskip("ipywidgets")

STEPS = 3


@pytest.fixture(scope="module")
def labels():
    """The first 300 rows of the committed label table (real bundled crystals) as the 'training set'."""
    from mattergen_kit.conditioning.labels import LABEL_TABLE, labels_dir

    return pd.read_csv(labels_dir() / LABEL_TABLE, nrows=300)


@pytest.fixture(scope="module")
def base_model():
    import mattergen_kit as mk

    return mk.load_model()


@pytest.fixture(scope="module")
def cond_model(labels):
    """The bundled model with a fresh adapter for four registry properties (normalisation fitted on real labels)."""
    import mattergen_kit as mk
    from mattergen_kit.conditioning import attach_adapter, get_spec

    model = mk.load_model()
    specs = [get_spec("chemical_system"), get_spec("space_group"),
             get_spec("band_gap").fit_normalisation(labels["band_gap"]),
             get_spec("hhi_production").fit_normalisation(labels["hhi_production"])]
    attach_adapter(model.denoiser, specs)
    return model


def _png_ok(png: bytes) -> bool:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("L")).std() > 5


def test_unconditional_panel_generates_into_the_gallery(base_model, labels):
    from mattergen_kit.widgets import GenerationPanel

    panel = GenerationPanel(base_model, labels=labels)
    assert panel.targets == {} and panel.targets_box.layout.display == "none"
    assert panel.guidance.disabled and "no property conditioning" in panel.note.value
    assert (panel.sampler.value, panel.steps.value) == ("fast", FAST_STEPS)       # the kit's default sampler
    panel.sampler.value = "reference"                                           # MatterGen's, at its 1000 steps
    assert panel.steps.value == 1000 and panel.request().sampler == "reference"
    panel.num.value, panel.steps.value, panel.batch_size.value, panel.seed.value = 2, STEPS, 1, "5"
    panel.generate_button.click()
    assert panel.wait(300), "generation thread did not finish"
    assert panel.message.value == "" and panel.error is None
    assert panel.status.value.startswith("done: 2/2 crystals")
    assert panel.progress.value == panel.progress.max == 2 * STEPS
    assert len(panel.gallery.children) == 2 and not panel.generate_button.disabled and panel.stop_button.disabled
    expected = base_model.generate(2, seed=5, steps=STEPS, batch_size=1, progress=False)
    assert [s.composition for s in panel.structures] == [s.composition for s in expected]
    row = panel.results[1]
    assert row["formula"] == expected[1].composition.reduced_formula and row["num_atoms"] == len(expected[1])
    assert 1 <= row["space_group"] <= 230 and isinstance(row["structural_valid"], bool)
    assert np.isfinite(row["hhi_production"])
    card = panel.gallery.children[1]
    assert card.button.description == f"1: {row['formula']}"
    assert f"SG {row['space_group']} " in card.children[2].value
    card.button.click()                                   # the 3D view of crystal 1
    assert panel.selected == 1
    (out,) = panel.viewer.outputs
    scene = json.loads(re.search(r"const d = (\{.*?\}), cv", out["data"]["text/html"], re.S).group(1))
    assert len(scene["atoms"]) == len(expected[1]) and _png_ok(base64.b64decode(out["data"]["image/png"]))
    assert panel.plot_property.value == "hhi_production" and _png_ok(panel.plot.value)
    assert not panel.trajectory_button.disabled
    panel.trajectory_button.click()                       # its denoising trajectory in the viewer
    (out,) = panel.viewer.outputs
    assert out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.player.model_id
    traj = panel.player.traj
    assert traj.steps == [0, 1, 2, STEPS] and panel.player.index == 0  # batch_size 1: crystal 1 is index 0 of its batch
    last = traj.frame(len(traj) - 1, panel.player.index)
    assert sorted(last.atom_types.tolist()) == sorted(site.specie.Z for site in expected[1])


def test_stop_ends_the_run_early_and_keeps_finished_crystals(base_model, labels):
    from mattergen_kit.widgets import GenerationPanel

    panel = GenerationPanel(base_model, labels=labels, thumbnails=False)
    panel.num.value, panel.steps.value, panel.batch_size.value = 3, 2000, 1
    panel.generate_button.click()
    assert panel.running and panel.generate_button.disabled and not panel.stop_button.disabled
    deadline = time.time() + 120
    while panel.progress.value < 2 and time.time() < deadline:
        time.sleep(0.05)
    panel.stop_button.click()
    assert panel.wait(120)
    assert panel.status.value.startswith("stopped: 0/3 crystals") and panel.progress.bar_style == "warning"
    assert 2 <= panel.progress.value < 2000 and panel.results == []
    assert not panel.generate_button.disabled and panel.stop_button.disabled


@pytest.mark.parametrize("setup, message", [
    (dict(seed="abc"), "seed must be a whole number"),
    (dict(steps=1), "steps must be at least 2, got 1"),
    (dict(num=0), "crystals must be at least 1, got 0"),
    (dict(batch_size=0), "batch must be at least 1, got 0"),
])
def test_bad_inputs_show_a_message_and_do_not_start(base_model, labels, setup, message):
    from mattergen_kit.widgets import GenerationPanel

    panel = GenerationPanel(base_model, labels=labels)
    for name, value in setup.items():
        getattr(panel, name).value = value
    panel.generate_button.click()
    assert not panel.running and panel._thread is None
    assert re.search(message, panel.message.value) and "Traceback" not in panel.message.value
    assert panel.gallery.children == ()


def test_an_error_during_generation_is_a_message(base_model, labels, monkeypatch):
    from mattergen_kit.widgets import GenerationPanel

    panel = GenerationPanel(base_model, labels=labels)
    panel.num.value, panel.steps.value = 1, STEPS

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")
        yield  # a generator, like iter_batches

    monkeypatch.setattr(base_model, "iter_batches", broken)
    panel.generate_button.click()
    assert panel.wait(60)
    assert "generation failed: out of memory (simulated)" in panel.message.value
    assert panel.status.value.startswith("failed: 0/1") and panel.error == "RuntimeError: out of memory (simulated)"


def test_conditioned_panel_builds_targets_from_the_model_and_steers(cond_model, labels):
    from mattergen_kit.widgets import GenerationPanel

    panel = GenerationPanel(cond_model, labels=labels, thumbnails=False)
    assert list(panel.targets) == ["chemical_system", "space_group", "band_gap", "hhi_production"]
    assert not panel.guidance.disabled and panel.targets_box.layout.display is None
    sg = panel.targets["space_group"].input
    assert sg.value == 225 and ("225 Fm-3m", 225) in sg.options and len(sg.options) == 230
    assert panel.targets["band_gap"].use.description == "band_gap [eV]"
    assert [o for o, _ in panel.plot_property.options] == ["space_group", "band_gap", "hhi_production", "num_atoms"]

    panel.targets["band_gap"].use.value, panel.targets["band_gap"].input.value = True, -1.0
    panel.generate_button.click()
    assert not panel.running and "band_gap = -1.0 eV is out of range" in panel.message.value
    panel.targets["band_gap"].use.value = False
    panel.targets["chemical_system"].use.value = True
    panel.generate_button.click()
    assert "chemical_system: pick at least one element" in panel.message.value

    panel.targets["chemical_system"].input.value = ["Li", "O"]
    panel.targets["space_group"].use.value = True
    panel.guidance.value = 0.0
    panel.generate_button.click()
    assert "guidance γ = 0 ignores the targets" in panel.message.value

    panel.guidance.value = 2.0
    panel.num.value, panel.steps.value, panel.batch_size.value, panel.seed.value = 2, STEPS, 2, "1"
    assert panel.request().conditions == {"chemical_system": "Li-O", "space_group": 225}
    panel.generate_button.click()
    assert panel.wait(300) and panel.error is None, panel.message.value
    assert len(panel.gallery.children) == 2
    for row in panel.results:  # the chemical-system condition also masks the elements
        assert row["in_chemical_system"] and {el.symbol for el in row["structure"].composition} <= {"Li", "O"}
        assert "in system: yes" in panel.gallery.children[row["index"]].children[1].value
    panel.plot_property.value = "space_group"
    assert _png_ok(panel.plot.value)
    png_band_gap = panel.figure_png("band_gap")        # training labels only: no cheap predictor
    assert _png_ok(png_band_gap)


def test_the_panel_takes_a_checkpoint_path_and_the_default_model():
    """GenerationPanel(path) and GenerationPanel() load the model themselves; the sampler default is read from the
    loaded model (the browser test's notebook builds the panel this way)."""
    from mattergen_kit.generation import BUNDLED_CHECKPOINT
    from mattergen_kit.widgets import GenerationPanel

    for panel in (GenerationPanel(BUNDLED_CHECKPOINT, thumbnails=False), GenerationPanel(thumbnails=False)):
        assert (panel.sampler.value, panel.steps.value) == ("fast", FAST_STEPS)
