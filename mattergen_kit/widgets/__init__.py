"""Notebook helpers: inline 3D views (no CDN, with a static PNG), static pictures of crystals, the denoising
trajectory player and the generation / guidance panel.

``view``, ``plot_structure``, ``structure_grid`` and ``trajectory_strip`` need only matplotlib;
``show_trajectory``, ``TrajectoryPlayer`` and ``GenerationPanel`` need ipywidgets (the ``[notebook]`` extra)
and are imported on first use.
"""
from mattergen_kit.render import plot_crystal, plot_structure, structure_grid
from mattergen_kit.widgets.trajectory import trajectory_strip
from mattergen_kit.widgets.viewer import CrystalView, view

__all__ = ["CrystalView", "view", "plot_crystal", "plot_structure", "structure_grid", "trajectory_strip",
           "show_trajectory", "TrajectoryPlayer", "GenerationPanel"]

_LAZY = {"show_trajectory": "player", "TrajectoryPlayer": "player", "GenerationPanel": "panel"}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'mattergen_kit.widgets' has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(f"mattergen_kit.widgets.{_LAZY[name]}")
    except ImportError as err:
        if getattr(err, "name", None) == "ipywidgets":
            raise ImportError(f"mattergen_kit.widgets.{name} needs ipywidgets: pip install 'mattergen_kit[notebook]' "
                              "(view, structure_grid and trajectory_strip work without it)") from err
        raise
    return getattr(module, name)
