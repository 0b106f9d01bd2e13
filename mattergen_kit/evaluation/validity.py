"""Validity checks for one crystal: structural, compositional (SMACT) and a bond-length sanity flag.

Definitions (CDVAE / MatterGen, ref §11.2):

* **structural validity**: the cell is finite with volume ``V ≥ 0.1 Å³`` and every interatomic distance,
  including distances to periodic images of the same atom, is ``d_ij ≥ 0.5 Å``.
* **compositional validity** (CDVAE's ``smact_validity``): with reduced counts ``c_i`` of the elements,
  the composition is valid if it is a single element, or every element is a metal (alloy), or there is an
  assignment of oxidation states ``q_i`` (SMACT's tabulated states of each element) with

      Σ_i c_i q_i = 0          (charge neutrality)

  that passes the Pauling electronegativity test: every cation (q > 0) is less electronegative than
  every anion (q < 0); a missing electronegativity passes.
* **bond sanity** (ours, a flag): with covalent radii ``r`` (Cordero 2008, via ASE), the shortest
  contact satisfies ``min_ij d_ij / (r_i + r_j) ≥ 0.6`` and no atom is isolated, i.e. every atom has
  a neighbour within ``max(1.6 (r_i + r_j), 4 Å)`` (so a lone atom in a huge cell is flagged).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from mattergen_kit.data.structural import (MAX_CELL_LENGTH, MIN_DISTANCE, MIN_VOLUME,  # noqa: F401 (re-exported)
                                           _finite_structure, structural_validity)

__all__ = ["structural_validity", "smact_validity", "bond_sanity", "check_structure"]


# ----------------------------------------------------------------------------------------------- SMACT
@lru_cache(maxsize=None)
def _smact_element(symbol: str):
    import smact

    el = smact.Element(symbol)
    return tuple(int(q) for q in (el.oxidation_states or ())), el.pauling_eneg


@lru_cache(maxsize=None)
def _metals() -> frozenset:
    import smact

    return frozenset(smact.metals)


def _pauling_ok(states, enegs) -> bool:
    cat = [e for q, e in zip(states, enegs) if q > 0]
    an = [e for q, e in zip(states, enegs) if q < 0]
    if any(e is None for e in cat + an):
        return True  # CDVAE treats a missing electronegativity as passing
    return all(c < a for c in cat for a in an)


@lru_cache(maxsize=100_000)
def _smact_valid_cached(symbols: tuple, counts: tuple, use_pauling_test: bool, include_alloys: bool) -> bool:
    if len(symbols) == 1:
        return True
    if include_alloys and all(s in _metals() for s in symbols):
        return True
    info = [_smact_element(s) for s in symbols]
    ox = [i[0] for i in info]
    enegs = [i[1] for i in info]
    if any(len(o) == 0 for o in ox):
        return False
    # depth-first search over oxidation states with bound pruning on the remaining charge
    k = len(symbols)
    lo = [0] * (k + 1)
    hi = [0] * (k + 1)
    for i in range(k - 1, -1, -1):
        lo[i] = lo[i + 1] + counts[i] * min(ox[i])
        hi[i] = hi[i + 1] + counts[i] * max(ox[i])
    chosen = [0] * k

    def dfs(i: int, charge: int) -> bool:
        if i == k:
            return charge == 0 and (not use_pauling_test or _pauling_ok(chosen, enegs))
        for q in ox[i]:
            c = charge + counts[i] * q
            if lo[i + 1] <= -c <= hi[i + 1]:
                chosen[i] = q
                if dfs(i + 1, c):
                    return True
        return False

    return dfs(0, 0)


def smact_validity(composition, use_pauling_test: bool = True, include_alloys: bool = True) -> bool:
    """CDVAE's SMACT compositional validity of a pymatgen ``Composition`` (or formula / Structure).

    Counts are reduced to integers by their gcd first (charge neutrality is scale invariant).
    """
    from pymatgen.core import Composition

    if hasattr(composition, "composition"):
        composition = composition.composition
    comp = Composition(composition)
    el_amt = comp.get_el_amt_dict()
    symbols = tuple(sorted(el_amt))
    counts = [el_amt[s] for s in symbols]
    if any(abs(c - round(c)) > 1e-6 for c in counts):
        return False  # fractional occupancies: no integer stoichiometry to test
    counts = [int(round(c)) for c in counts]
    g = 0
    for c in counts:
        g = math.gcd(g, c)
    counts = tuple(c // max(g, 1) for c in counts)
    try:
        return _smact_valid_cached(symbols, counts, use_pauling_test, include_alloys)
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------- bonds
def bond_sanity(structure, min_ratio: float = 0.6, isolated_ratio: float = 1.6,
                isolated_floor: float = 4.0) -> tuple[bool, float, int]:
    """``(ok, min_ratio_found, n_isolated)`` from covalent radii (see the module docstring).

    ``min_ratio_found = min_ij d_ij / (r_i + r_j)``; an atom is isolated if it has no neighbour within
    ``max(isolated_ratio (r_i + r_j), isolated_floor)`` Å.
    """
    from ase.data import covalent_radii

    if _finite_structure(structure):
        return False, float("nan"), 0
    radii = np.array([covalent_radii[site.specie.Z] if hasattr(site.specie, "Z") else 1.5 for site in structure])
    rmax = float(max(isolated_floor, isolated_ratio * 2 * radii.max()))
    ci, ni, _, d = structure.get_neighbor_list(rmax)
    if len(d) == 0:
        return False, float("nan"), len(structure)
    ratio = d / (radii[ci] + radii[ni])
    min_ratio_found = float(ratio.min())
    reach = np.maximum(isolated_ratio * (radii[ci] + radii[ni]), isolated_floor)
    has_neighbour = np.zeros(len(structure), bool)
    has_neighbour[ci[d <= reach]] = True
    n_iso = int((~has_neighbour).sum())
    return bool(min_ratio_found >= min_ratio and n_iso == 0), min_ratio_found, n_iso


def check_structure(structure) -> dict:
    """All validity columns for one structure (never raises)."""
    row = {"structural_valid": False, "validity_reason": "", "compositional_valid": False,
           "bond_ok": False, "min_bond_ratio": float("nan"), "n_isolated_atoms": 0}
    try:
        ok, reason = structural_validity(structure)
        row["structural_valid"], row["validity_reason"] = ok, reason
    except Exception as exc:
        row["validity_reason"] = f"error: {exc}"
    try:
        row["compositional_valid"] = bool(smact_validity(structure.composition))
    except Exception:
        pass
    try:
        if row["structural_valid"] or _finite_structure(structure) is None:
            ok, r, n_iso = bond_sanity(structure)
            row.update(bond_ok=ok, min_bond_ratio=r, n_isolated_atoms=n_iso)
    except Exception:
        pass
    return row
