"""Static pictures of crystals with matplotlib: one cell, a grid of cells, or a denoising trajectory strip.

Atoms are drawn as spheres coloured by element (Jmol colours from ASE), sized by covalent radius,
inside the unit-cell edges (a, b, c drawn red, green, blue from the origin); the projection is a fixed oblique
view so that pictures are comparable. Atoms whose type is still masked (Z = 101, mid-denoising) are grey
and labelled "?". A legend names the elements.

>>> from pymatgen.core import Lattice, Structure
>>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
>>> ax = plot_structure(nacl, legend=True)               # one cell with its element legend
>>> fig = structure_grid([nacl] * 4, path="grid.png")    # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from mattergen_kit.data import MASK_Z

# unit-cell edges as pairs of fractional corners (corner index = 4i + 2j + k)
_CORNERS = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
_EDGES = [(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(_CORNERS[a] - _CORNERS[b]).sum() == 1]
#: the lattice vectors a, b, c as edges from the origin corner, with their colours
_AXES = {"a": (0, 4, "#d62728"), "b": (0, 2, "#2ca02c"), "c": (0, 1, "#1f77b4")}
MASK_COLOR = (0.62, 0.62, 0.62)
MASK_RADIUS = 0.9  # Å, drawn size of a not-yet-revealed atom


def _element_style(z: int) -> tuple[np.ndarray, float]:
    """(RGB colour in [0, 1], covalent radius Å) of atomic number ``z``; grey for the mask token."""
    if int(z) == MASK_Z:
        return np.array(MASK_COLOR), MASK_RADIUS
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    return jmol_colors[z], float(covalent_radii[z])


def element_label(z: int) -> str:
    """Element symbol of ``z``; "?" for the mask token (type not revealed yet)."""
    if int(z) == MASK_Z:
        return "?"
    from ase.data import chemical_symbols

    return chemical_symbols[int(z)]


def crystal_arrays(crystal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(atomic numbers (N,), fractional coordinates (N, 3), lattice (3, 3)) of a pymatgen ``Structure`` or a
    one-crystal :class:`~mattergen_kit.data.CrystalBatch` (which may hold masked atoms)."""
    if hasattr(crystal, "atom_types"):
        if crystal.num_crystals != 1:
            raise ValueError(f"expected one crystal, got a batch of {crystal.num_crystals}: index it first (batch[i])")
        return (crystal.atom_types.cpu().numpy().astype(int), crystal.frac_coords.detach().cpu().double().numpy(),
                crystal.lattice[0].detach().cpu().double().numpy())
    if hasattr(crystal, "lattice") and hasattr(crystal, "frac_coords"):
        return (np.array([site.specie.Z for site in crystal], dtype=int), np.asarray(crystal.frac_coords, float),
                np.asarray(crystal.lattice.matrix, float))
    raise TypeError(f"cannot draw a {type(crystal).__name__}: give a pymatgen Structure or a one-crystal CrystalBatch")


def crystal_title(crystal) -> str:
    """Reduced formula of the revealed atoms, the number of masked ones and of all atoms, e.g.
    "Co4B + 9 masked (14 atoms)"."""
    types, _, _ = crystal_arrays(crystal)
    masked = int((types == MASK_Z).sum())
    known = types[types != MASK_Z]
    if len(known):
        from pymatgen.core import Composition

        formula = Composition({element_label(z): int((known == z).sum()) for z in np.unique(known)}).reduced_formula
    else:
        formula = ""
    if masked:
        formula = f"{formula} + {masked} masked" if formula else "all masked"
    return f"{formula} ({len(types)} atoms)"


def legend_entries(types: np.ndarray) -> list[tuple[str, tuple]]:
    """[(label, rgb)] of the distinct elements in ``types`` (masked last, labelled "masked")."""
    out = []
    for z in sorted({int(z) for z in types}):
        color, _ = _element_style(z)
        out.append(("masked" if z == MASK_Z else element_label(z), tuple(float(c) for c in color)))
    return out


def _view_rotation(elev: float = 20.0, azim: float = 35.0) -> np.ndarray:
    """Rotation taking Cartesian coordinates to the picture frame (x right, y up, z toward viewer)."""
    a, e = math.radians(azim), math.radians(elev)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    # look along -y after the rotations: swap axes so z points to the viewer
    swap = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    return swap @ rx @ rz


def plot_crystal(crystal, ax, title: str | None = None, show_cell: bool = True, legend: bool = True,
                 labels: bool = False, fontsize: int = 9):
    """Draw a pymatgen ``Structure`` or a one-crystal ``CrystalBatch`` (masked atoms grey, "?") into ``ax``.

    ``legend`` adds the element legend, ``labels`` writes each atom's symbol on it; the cell edges are grey
    with a, b, c coloured red, green, blue from the origin.
    """
    from matplotlib.patches import Circle

    types, frac, L = crystal_arrays(crystal)
    R = _view_rotation()
    cart = (np.mod(frac, 1.0) @ L) @ R.T
    corners = (_CORNERS @ L) @ R.T
    if show_cell:
        axis_edges = {(a, b): (name, color) for name, (a, b, color) in _AXES.items()}
        for a, b in _EDGES:
            name, color = axis_edges.get((a, b), (None, "0.35"))
            ax.plot(*zip(corners[a][:2], corners[b][:2]), color=color, lw=1.2 if name else 0.8, zorder=0)
            if name:
                ax.text(*corners[b][:2], name, color=color, fontsize=fontsize - 1, zorder=50)
    order = np.argsort(cart[:, 2])  # painter's algorithm: far atoms first
    span = max(np.ptp(corners[:, 0]), np.ptp(corners[:, 1]), 1.0)
    for i in order:
        color, radius = _element_style(types[i])
        z = 2 + float(cart[i, 2]) / span
        ax.add_patch(Circle(cart[i, :2], 0.45 * radius, facecolor=color, edgecolor="k", lw=0.4, zorder=z))
        if labels:
            ax.text(*cart[i, :2], element_label(types[i]), ha="center", va="center", fontsize=fontsize - 3, zorder=z)
    ax.set_xlim(corners[:, 0].min() - 1.5, corners[:, 0].max() + 1.5)
    ax.set_ylim(corners[:, 1].min() - 1.5, corners[:, 1].max() + 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    if legend:
        ax.legend(handles=_legend_handles(types), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=fontsize - 2,
                  frameon=False, handletextpad=0.2, borderaxespad=0.2)
    ax.set_title(title if title is not None else crystal_title(crystal), fontsize=fontsize)
    return ax


def _legend_handles(types, **marker) -> list:
    """One round marker per distinct element of ``types`` (its colour, its symbol as label), for ``ax.legend``."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="o", ls="", markerfacecolor=c, markeredgecolor="k", label=name, **marker)
            for name, c in legend_entries(types)]


def _legend_below(ax, types, fontsize: int = 7) -> None:
    """The element colours of one cell in a row (two rows past four elements) under its picture."""
    handles = _legend_handles(types, markersize=6)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=min(len(handles), 4),
              fontsize=fontsize, frameon=False, handletextpad=0.1, columnspacing=0.6, borderaxespad=0.0)


def plot_structure(structure, ax=None, title: str | None = None, show_cell: bool = True, legend: bool = False,
                   labels: bool = False):
    """Draw one pymatgen ``Structure`` into a matplotlib axis (created if not given); title: reduced formula."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(3, 3))
    if title is None:
        title = structure.composition.reduced_formula if hasattr(structure, "composition") else None
    return plot_crystal(structure, ax, title=title, show_cell=show_cell, legend=legend, labels=labels)


def crystal_png(crystal, size: tuple[float, float] = (3.6, 3.2), dpi: int = 100, title: str | None = None,
                legend: bool = True, labels: bool = True) -> bytes:
    """PNG bytes of one crystal (thread-safe: no pyplot state), the static image saved with every 3D view."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.72, 0.88))
    plot_crystal(crystal, ax, title=title, legend=legend, labels=labels)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def structure_grid(structures: Sequence, titles: Sequence[str] | None = None, ncols: int = 8,
                   path: str | Path | None = None, dpi: int = 110, legend: bool = True):
    """A grid picture of many cells; saved as PNG when ``path`` is given. Returns the figure.
    ``legend``: each cell's element colours named under it."""
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
            if legend:
                _legend_below(ax, crystal_arrays(structures[k])[0])
        else:
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    return fig
