"""The ipywidgets trajectory player (needs ipywidgets, the ``[notebook]`` extra); see trajectory.py.

>>> player = show_trajectory(traj, index=0)    # doctest: +SKIP
>>> player.slider.value = 3                    # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io

import ipywidgets

from mattergen_kit.render import crystal_title
from mattergen_kit.widgets.trajectory import _check, frame_caption, trajectory_strip
from mattergen_kit.widgets.viewer import CrystalView


def show_in(output, obj) -> None:
    """Replace what an ``ipywidgets.Output`` shows by ``obj``'s display data. Setting the synced ``outputs``
    trait works from any thread and outside a kernel (``with output:`` capture and ``clear_output`` rely on the
    kernel's current message, so they do not work from a background thread)."""
    from IPython.core.interactiveshell import InteractiveShell

    data, metadata = InteractiveShell.instance().display_formatter.format(obj)
    output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def show_trajectory(traj, index: int = 0, width: int = 420, height: int = 360, interval_ms: int = 300):
    """An ipywidgets player of crystal ``index``'s trajectory: Play button and slider over the frames, the 3D
    canvas view of the current frame (see :class:`TrajectoryPlayer`)."""
    return TrajectoryPlayer(traj, index=index, width=width, height=height, interval_ms=interval_ms)


class TrajectoryPlayer(ipywidgets.VBox):
    """``VBox(HBox(play, slider, caption), output)``; ``.show(j)`` draws frame ``j`` (the slider does it too).

    When a front end cannot show widgets (a notebook reopened untrusted or without the widget state) the output
    falls back to a static PNG strip of the trajectory (``image/png`` in the mime bundle).
    """

    def __init__(self, traj, index: int = 0, width: int = 420, height: int = 360, interval_ms: int = 300):
        import ipywidgets as w

        _check(traj, index)
        self.traj, self.index = traj, index
        self._size = (width, height)
        n = len(traj)
        self.play = w.Play(value=0, min=0, max=n - 1, step=1, interval=interval_ms, description="Play")
        self.slider = w.IntSlider(value=0, min=0, max=n - 1, step=1, description="frame", continuous_update=True)
        w.jslink((self.play, "value"), (self.slider, "value"))
        self.caption = w.Label()
        self.output = w.Output(layout=w.Layout(min_height=f"{height + 10}px"))
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        super().__init__([w.HBox([self.play, self.slider, self.caption]), self.output])
        self.show(0)

    def show(self, j: int) -> None:
        """Draw frame ``j`` into the output (a canvas view without a static image: frames change often)."""
        crystal = self.traj.frame(j, self.index)
        self.caption.value = frame_caption(self.traj, self.index, j)
        view = CrystalView(crystal, width=self._size[0], height=self._size[1], static=False,
                           title=f"step {self.traj.steps[j]}: {crystal_title(crystal)}")
        self.current_view = view
        show_in(self.output, view)

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        fig = trajectory_strip(self.traj, self.index)
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        bundle["image/png"] = base64.b64encode(buf.getvalue()).decode()
        return bundle
