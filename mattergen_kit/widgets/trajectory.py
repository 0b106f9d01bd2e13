"""Play a denoising trajectory: the lattice relaxing, the coordinates sharpening and the atom types being revealed.

>>> import mattergen_kit as mk
>>> from mattergen_kit.widgets import show_trajectory, trajectory_strip
>>> model = mk.load_model()
>>> crystals, traj = model.generate(2, seed=0, steps=20, return_trajectory=True, trajectory_every=5, progress=False)
>>> player = show_trajectory(traj, index=0)   # doctest: +SKIP
>>> fig = trajectory_strip(traj, 0)           # the static picture a saved notebook keeps (path= writes a PNG)
>>> len(fig.axes)
5

``show_trajectory`` (player.py, needs ipywidgets) is the slider + Play player with the 3D canvas per frame.

Masked atoms (type not revealed yet, Z = 101) are drawn grey with "?"; the label above the view says the step,
the diffusion time t and how many atom types are revealed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mattergen_kit.data import MASK_Z
from mattergen_kit.render import crystal_title, plot_crystal


def _check(traj, index: int) -> None:
    if not hasattr(traj, "frames") or not len(traj):
        raise ValueError("not a denoising trajectory (or an empty one): get one with "
                         "model.generate(..., return_trajectory=True)")
    if not 0 <= index < traj.num_crystals:
        raise IndexError(f"crystal {index} is out of range: the trajectory holds {traj.num_crystals} crystals")


def frame_caption(traj, index: int, j: int) -> str:
    """"step 40/100 · t = 0.600 · 5/8 types revealed" for frame ``j`` of crystal ``index``."""
    crystal = traj.frame(j, index)
    types = crystal.atom_types
    revealed = int((types != MASK_Z).sum())
    return (f"step {traj.steps[j]}/{traj.steps[-1]} · t = {traj.times[j]:.3f} · "
            f"{revealed}/{len(types)} types revealed")


def _strip_frames(n: int, max_frames: int) -> list[int]:
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (the prior and the result), got {max_frames}")
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(n, max_frames))})


def trajectory_strip(traj, index: int = 0, path: str | Path | None = None, max_frames: int = 6, dpi: int = 100):
    """A static row of frames of crystal ``index`` (prior … result, evenly spaced, at most ``max_frames``) with
    the step, t and the element legend; saved as PNG when ``path`` is given. Returns the matplotlib figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    _check(traj, index)
    frames = _strip_frames(len(traj), max_frames)
    fig, axes = plt.subplots(1, len(frames), figsize=(2.4 * len(frames) + 0.8, 2.7), squeeze=False)
    for k, (j, ax) in enumerate(zip(frames, axes[0])):
        crystal = traj.frame(j, index)
        title = f"step {traj.steps[j]}, t={traj.times[j]:.2f}\n{crystal_title(crystal)}"
        plot_crystal(crystal, ax, title=title, legend=k == len(frames) - 1, fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig
