"""Notebook helpers: inline 3D views (no CDN) and static pictures of crystals."""
from mattergen_kit.widgets.render import plot_structure, structure_grid
from mattergen_kit.widgets.viewer import CrystalView, view

__all__ = ["CrystalView", "view", "plot_structure", "structure_grid"]
