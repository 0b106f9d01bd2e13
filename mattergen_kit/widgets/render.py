"""Static pictures of crystals with matplotlib: one cell, or a grid of cells saved as PNG.

Atoms are drawn as spheres coloured by element (Jmol colours from ASE), sized by covalent radius,
inside the unit-cell edges; the projection is a fixed oblique view so that pictures are comparable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

# unit-cell edges as pairs of fractional corners
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(_CORNERS[a] - _CORNERS[b]).sum() == 1]


def _element_style(z: int) -> tuple[np.ndarray, float]:
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    return jmol_colors[z], float(covalent_radii[z])


def _view_rotation(elev: float = 20.0, azim: float = 35.0) -> np.ndarray:
    """Rotation taking Cartesian coordinates to the picture frame (x right, y up, z toward viewer)."""
    a, e = math.radians(azim), math.radians(elev)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    # look along -y after the rotations: swap axes so z points to the viewer
    swap = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    return swap @ rx @ rz


def plot_structure(structure, ax=None, title: str | None = None, show_cell: bool = True):
    """Draw one pymatgen ``Structure`` into a matplotlib axis (created if not given)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    R = _view_rotation()
    L = np.asarray(structure.lattice.matrix)
    cart = np.asarray(structure.cart_coords) @ R.T
    corners = (_CORNERS @ L) @ R.T
    if show_cell:
        for a, b in _EDGES:
            ax.plot(*zip(corners[a][:2], corners[b][:2]), color="0.35", lw=0.8, zorder=0)
    order = np.argsort(cart[:, 2])  # painter's algorithm: far atoms first
    span = max(np.ptp(corners[:, 0]), np.ptp(corners[:, 1]), 1.0)
    for i in order:
        color, radius = _element_style(structure[i].specie.Z)
        ax.add_patch(plt.Circle(cart[i, :2], 0.45 * radius, facecolor=color, edgecolor="k", lw=0.4,
                                zorder=2 + float(cart[i, 2]) / span))
    ax.set_xlim(corners[:, 0].min() - 1.5, corners[:, 0].max() + 1.5)
    ax.set_ylim(corners[:, 1].min() - 1.5, corners[:, 1].max() + 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title if title is not None else structure.composition.reduced_formula, fontsize=9)
    return ax


def structure_grid(structures: Sequence, titles: Sequence[str] | None = None, ncols: int = 8,
                   path: str | Path | None = None, dpi: int = 110):
    """A grid picture of many cells; saved as PNG when ``path`` is given. Returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(structures)
    if n == 0:
        raise ValueError("no structures to draw")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.3 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            plot_structure(structures[k], ax=ax, title=None if titles is None else titles[k])
        else:
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig
