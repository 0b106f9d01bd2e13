"""Structural validity of one crystal (CDVAE / MatterGen, ref §11.2): the cell is finite with volume ``V ≥ 0.1 Å³``
and every interatomic distance, including distances to periodic images of the same atom, is ``d_ij ≥ 0.5 Å``.

One rule for the whole kit: the evaluator reports it (:mod:`mattergen_kit.evaluation.validity`) and the run writer
refuses to write a crystal that fails it (:func:`mattergen_kit.outputs.crystal_cif`). It lives on the data floor
because generation must work without the evaluation extras.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["structural_validity", "MIN_DISTANCE", "MIN_VOLUME", "MAX_CELL_LENGTH"]

MIN_DISTANCE = 0.5  # Å
MIN_VOLUME = 0.1  # Å^3


def _finite_structure(structure) -> str | None:
    """Return a reason string if the lattice or coordinates are not finite / degenerate, else None."""
    m = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(m)):
        return "non-finite lattice"
    if not np.all(np.isfinite(structure.frac_coords)):
        return "non-finite coordinates"
    if len(structure) == 0:
        return "no atoms"
    return None


MAX_CELL_LENGTH = 1000.0  # Å: longer lattice vectors mean the sample's lattice diverged


def structural_validity(structure, cutoff: float = MIN_DISTANCE, min_volume: float = MIN_VOLUME) -> tuple[bool, str]:
    """``(valid, reason)``: finite cell, ``V ≥ min_volume`` Å³ and all periodic distances ``≥ cutoff`` Å.

    Distances include periodic images (so an atom closer than ``cutoff`` to its own image, i.e. a lattice
    vector shorter than ``cutoff``, makes the structure invalid). ``reason`` is ``""`` when valid.
    """
    bad = _finite_structure(structure)
    if bad:
        return False, bad
    if not structure.is_ordered:  # a site shared by several species / partly empty: no crystal to relax or match
        site = next(s for s in structure if not s.is_ordered)
        return False, (f"partial occupancy ({site.species.formula} on one site): evaluate needs ordered crystals; "
                       "order it first (e.g. pymatgen's OrderDisorderedStructureTransformation)")
    vol = abs(float(np.linalg.det(structure.lattice.matrix)))
    if not vol >= min_volume:
        return False, f"volume {vol:.3g} Å³ < {min_volume}"
    longest = float(max(structure.lattice.abc))
    if longest > MAX_CELL_LENGTH:
        # an exploded cell: no crystal, and the image search below would need memory in proportion to its size
        return False, f"cell exploded (longest lattice vector {longest:.3g} Å > {MAX_CELL_LENGTH:g} Å)"
    try:
        # all neighbours (incl. own periodic images) closer than the cutoff; on the LLL-reduced cell, so a
        # skewed (but valid) cell does not make the image search enumerate millions of images
        neigh = structure.get_reduced_structure("LLL").get_all_neighbors(cutoff, include_index=False)
    except Exception as exc:  # pragma: no cover - pathological cells
        return False, f"neighbour search failed: {exc}"
    dmin = min((n.nn_distance for site in neigh for n in site), default=math.inf)
    if dmin < cutoff:
        return False, f"atoms {dmin:.3f} Å apart (< {cutoff} Å)"
    return True, ""
