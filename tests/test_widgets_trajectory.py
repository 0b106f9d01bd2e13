"""Denoising trajectory: recording never changes samples, frames from the prior to the result, the player and
the static strip. Bundled model, 5 sampler steps, 2-3 crystals."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mattergen_kit.data import MASK_Z

STEPS = 5


@pytest.fixture(scope="module")
def model():
    import mattergen_kit as mk

    return mk.load_model()


@pytest.fixture(scope="module")
def run(model):
    """(batch, trajectory) of 3 crystals in batches of 2 (the trajectory joins two sampler calls)."""
    return model.sample(3, seed=7, steps=STEPS, batch_size=2, progress=False, return_trajectory=True,
                        trajectory_every=2)


def _same(a, b):
    return (torch.equal(a.atom_types, b.atom_types) and torch.equal(a.frac_coords, b.frac_coords)
            and torch.equal(a.lattice, b.lattice) and torch.equal(a.num_atoms, b.num_atoms))


def test_recording_does_not_change_the_samples(model, run):
    plain = model.sample(3, seed=7, steps=STEPS, batch_size=2, progress=False)
    batch, _ = run
    assert _same(plain, batch)


def test_frames_run_from_the_prior_to_the_result(run):
    batch, traj = run
    assert traj.steps == [0, 2, 4, STEPS] and len(traj) == 4 and traj.num_crystals == 3
    assert traj.times[0] == pytest.approx(1.0) and traj.times[-1] == 0.0
    assert all(a > b for a, b in zip(traj.times, traj.times[1:]))
    first, last = traj.frames[0], traj.frames[-1]
    assert bool((first.atom_types == MASK_Z).all())           # every type masked at the start
    assert _same(last, batch)                                  # the last frame is what sample() returned
    assert all(f.atom_types.device.type == "cpu" and f.frac_coords.dtype == torch.float32 for f in traj.frames)
    assert not torch.equal(first.lattice, last.lattice) and not torch.equal(first.frac_coords, last.frac_coords)
    revealed = traj.revealed_fraction(1)
    assert revealed[0] == 0.0 and revealed[-1] == 1.0 and revealed == sorted(revealed)
    assert len(traj.crystal(2)) == 4 and traj.crystal(2)[0].num_crystals == 1
    with pytest.raises(IndexError, match="out of range"):
        traj.crystal(3)


def test_generate_returns_structures_and_trajectory(model):
    import mattergen_kit as mk

    plain = mk.generate(2, seed=1, steps=STEPS, model=model, progress=False)
    crystals, traj = mk.generate(2, seed=1, steps=STEPS, model=model, progress=False, return_trajectory=True,
                                 trajectory_every=1)
    assert [s.composition for s in crystals] == [s.composition for s in plain]
    assert np.allclose(crystals[0].lattice.matrix, plain[0].lattice.matrix)
    assert traj.steps == list(range(STEPS + 1)) and traj.num_crystals == 2


def test_bad_recording_options_fail_before_sampling(model):
    from mattergen_kit.sampling import PredictorCorrectorSampler

    with pytest.raises(ValueError, match="trajectory_every must be a positive"):
        next(model.iter_batches(2, seed=0, steps=STEPS, trajectory_every=0, progress=False))
    sampler = PredictorCorrectorSampler(model.diffusion, num_steps=STEPS)
    with pytest.raises(ValueError, match="record_every must be a positive"):
        sampler.sample(model.denoiser, [3], seed=0, record_every=-1, progress=False)


def test_step_callback_sees_every_step_and_can_stop_sampling(model):
    from mattergen_kit.sampling import PredictorCorrectorSampler

    seen = []
    sampler = PredictorCorrectorSampler(model.diffusion, num_steps=STEPS)
    sampler.sample(model.denoiser, [3, 4], seed=0, progress=False, step_callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, STEPS) for i in range(1, STEPS + 1)]

    class Stop(Exception):
        pass

    def stop_at_2(i, n):
        seen.append(i)
        if i == 2:
            raise Stop

    seen.clear()
    with pytest.raises(Stop):
        sampler.sample(model.denoiser, [3], seed=0, progress=False, step_callback=stop_at_2)
    assert seen == [1, 2]


def _scene(html: str) -> dict:
    return json.loads(re.search(r"const d = (\{.*?\}), cv", html, re.S).group(1))


def test_player_slider_draws_each_frame_with_masked_atoms_grey(run):
    from mattergen_kit.widgets import show_trajectory

    _, traj = run
    player = show_trajectory(traj, index=1)
    assert player.slider.max == len(traj) - 1 and player.play.max == len(traj) - 1
    n = int(traj.frame(0, 1).num_atoms)

    def shown():
        (out,) = player.output.outputs
        return _scene(out["data"]["text/html"])

    scene = shown()
    assert [a["el"] for a in scene["atoms"]] == ["?"] * n
    assert {a["color"] for a in scene["atoms"]} == {"rgb(158,158,158)"}
    assert scene["legend"] == [["masked", "rgb(158,158,158)"]]
    assert player.caption.value.startswith("step 0/5 · t = 1.000 · 0/")
    player.slider.value = len(traj) - 1                        # as dragging the slider / Play does
    scene = shown()
    assert "?" not in [a["el"] for a in scene["atoms"]] and len(scene["atoms"]) == n
    assert player.caption.value.startswith(f"step 5/5 · t = 0.000 · {n}/{n}")
    final = traj.frame(len(traj) - 1, 1)
    expected = np.mod(final.frac_coords.double().numpy(), 1.0) @ final.lattice[0].double().numpy()
    np.testing.assert_allclose(np.array([a["xyz"] for a in scene["atoms"]]), expected, atol=1e-3)
    bundle = player._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and bundle["image/png"]


def test_strip_png_and_errors(run, tmp_path):
    from PIL import Image

    from mattergen_kit.widgets import show_trajectory, trajectory_strip

    _, traj = run
    path = tmp_path / "strip.png"
    fig = trajectory_strip(traj, 2, path, max_frames=3)
    assert len(fig.axes) == 3
    assert [ax.get_title().split(",")[0] for ax in fig.axes] == ["step 0", "step 4", "step 5"]  # frames 0, 2, 3 of 4
    with Image.open(path) as im:
        w, h = im.size
        pixels = np.asarray(im.convert("L"))
    assert w > 2 * h and pixels.std() > 5
    with pytest.raises(IndexError, match="crystal 3 is out of range"):
        trajectory_strip(traj, 3)
    with pytest.raises(ValueError, match="not a denoising trajectory"):
        show_trajectory([], 0)
