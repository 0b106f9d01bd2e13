"""Uniqueness and novelty with pymatgen's StructureMatcher, prefiltered by reduced formula.

Two structures *match* when ``StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)`` (primitive cells,
volume scaling on; MatterGen's ordered matcher, ref §11.2) says they are the same crystal. Because matching
structures always share a reduced formula, each structure is only compared with the structures of its
formula, so N generated × M reference stays cheap (a dictionary look-up plus a handful of ``fit`` calls).

* **unique**: the first member (in input order) of each group of mutually matching structures;
  ``uniqueness = #unique / #submitted``.
* **novel**: no reference structure matches; ``novelty = #novel / #submitted``.
* **novel composition**: the reduced formula does not occur in the reference formulas (e.g. the 35k
  MP-20 phases, :func:`mp20_formulas`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from mattergen_kit.evaluation.reference import load_phases_table

__all__ = ["default_matcher", "unique_mask", "novel_mask", "ReferenceIndex", "mp20_formulas", "reduced_formula"]


def default_matcher(ltol: float = 0.2, stol: float = 0.3, angle_tol: float = 5.0):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True, scale=True,
                            attempt_supercell=False, allow_subset=False)


def reduced_formula(structure) -> str | None:
    try:
        return structure.composition.reduced_formula
    except Exception:
        return None


def _safe_fit(matcher, a, b) -> bool:
    try:
        return bool(matcher.fit(a, b))
    except Exception:
        return False


def unique_mask(structures: Sequence, usable: Sequence[bool] | None = None, matcher=None,
                progress: bool = False) -> list[bool]:
    """``mask[i]`` is True iff structure i is the first member of its match group.

    Structures with ``usable[i] == False`` (e.g. a NaN lattice) are never unique and are not compared.
    """
    matcher = matcher or default_matcher()
    usable = list(usable) if usable is not None else [s is not None for s in structures]
    reps: dict[str, list[int]] = defaultdict(list)  # formula -> indices of unique representatives
    out = [False] * len(structures)
    it = range(len(structures))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="uniqueness", leave=False)
    for i in it:
        s = structures[i]
        if not usable[i] or s is None:
            continue
        f = reduced_formula(s)
        if f is None:
            continue
        if any(_safe_fit(matcher, s, structures[j]) for j in reps[f]):
            continue
        reps[f].append(i)
        out[i] = True
    return out


class ReferenceIndex:
    """Reference structures grouped by reduced formula, for novelty queries.

    >>> idx = ReferenceIndex(train_structures)           # doctest: +SKIP
    >>> idx.is_novel(s), idx.match(s)                     # doctest: +SKIP
    """

    def __init__(self, structures: Sequence, ids: Sequence[str] | None = None, matcher=None):
        self.matcher = matcher or default_matcher()
        self.structures = list(structures)
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(self.structures))]
        self.by_formula: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(self.structures):
            f = reduced_formula(s)
            if f is not None:
                self.by_formula[f].append(i)

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def formulas(self) -> set[str]:
        return set(self.by_formula)

    def match(self, structure) -> str | None:
        """Id of the first matching reference structure, or None."""
        f = reduced_formula(structure)
        for j in self.by_formula.get(f, ()):
            if _safe_fit(self.matcher, structure, self.structures[j]):
                return self.ids[j]
        return None

    def is_novel(self, structure) -> bool:
        return self.match(structure) is None


def novel_mask(structures: Sequence, reference: "ReferenceIndex | Sequence", usable: Sequence[bool] | None = None,
               progress: bool = False) -> tuple[list[bool], list[str | None]]:
    """``(novel, matched_id)`` per structure against a reference (a :class:`ReferenceIndex` or structures).

    Unusable structures get ``novel=False`` (they cannot be a new crystal)."""
    ref = reference if isinstance(reference, ReferenceIndex) else ReferenceIndex(reference)
    usable = list(usable) if usable is not None else [s is not None for s in structures]
    novel, matched = [], []
    it = range(len(structures))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="novelty", leave=False)
    for i in it:
        if not usable[i] or structures[i] is None:
            novel.append(False)
            matched.append(None)
            continue
        m = ref.match(structures[i])
        novel.append(m is None)
        matched.append(m)
    return novel, matched


_MP20_FORMULAS: set[str] | None = None


def mp20_formulas() -> set[str]:
    """Reduced formulas of the 35k MP-20 phases (from ``species_at_sites``; bundled parquet)."""
    global _MP20_FORMULAS
    if _MP20_FORMULAS is None:
        _MP20_FORMULAS = set(load_phases_table()["reduced_formula"])
    return _MP20_FORMULAS
