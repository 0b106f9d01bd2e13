"""What a loader kept and skipped: :class:`Skip` (one record left out, with file, row and reason) and
:class:`LoadReport` (the counts and the list, printable and serialisable into the tensor cache)."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class Skip:
    """One record that was not kept: where it came from and why."""

    source: str
    row: Any
    reason: str
    kind: str = "invalid"  # "invalid" (bad input), "filtered" (policy: size, energy, elements), "duplicate"
    material_id: str | None = None

    def __str__(self) -> str:
        mid = f" ({self.material_id})" if self.material_id else ""
        return f"{self.source} row {self.row}{mid}: {self.reason}"


@dataclass
class LoadReport:
    """What a loader kept and skipped. ``str(report)`` gives a summary; ``to_frame()`` the full list."""

    name: str = ""
    kept: int = 0
    skipped: list[Skip] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)  # counted events that did not skip (e.g. "ordered")

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([s.__dict__ for s in self.skipped], columns=["source", "row", "reason", "kind",
                                                                          "material_id"])

    def counts(self) -> dict[str, int]:
        """Number of skips per (kind, reason category): the reason's text before ':' / '(' with numbers as '#'."""
        import re

        out: dict[str, int] = {}
        for s in self.skipped:
            cat = re.sub(r"[-+]?\d[\d.]*", "#", s.reason.split(":")[0].split(" (")[0])
            cat = re.sub(r"element\(s\) .*", "element(s)", cat).strip()
            key = f"{s.kind}: {cat}"
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __str__(self) -> str:
        lines = [f"{self.name or 'dataset'}: kept {self.kept}, skipped {self.n_skipped}"]
        lines += [f"  {n:6d}  {k}" for k, n in self.counts().items()]
        lines += [f"  note: {k} = {n}" for k, n in self.notes.items()]
        lines += [f"  e.g. {s}" for s in self.skipped[:3]]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:  # pragma: no cover - notebook only
        import html

        return "<pre>" + html.escape(str(self)) + "</pre>"

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": self.kept, "sources": list(self.sources), "notes": dict(self.notes),
                "skipped": [dict(s.__dict__, row=s.row if isinstance(s.row, (int, str)) else str(s.row))
                            for s in self.skipped]}

    @classmethod
    def from_dict(cls, d: dict) -> "LoadReport":
        return cls(d.get("name", ""), int(d.get("kept", 0)), [Skip(**s) for s in d.get("skipped", [])],
                   list(d.get("sources", [])), dict(d.get("notes", {})))

    def extend(self, other: "LoadReport") -> None:
        self.kept += other.kept
        self.skipped.extend(other.skipped)
        self.sources.extend(other.sources)
        for k, n in other.notes.items():
            self.notes[k] = self.notes.get(k, 0) + n


def check_load_options(path=None, **limits) -> None:
    """The filters of a loader, checked before any file is read (issue 24): ``max_atoms`` / ``limit`` a whole number
    ≥ 1, an energy cut-off (``e_above_hull_max``, ``formation_energy_max``) a finite number, each or None; ``path`` a
    path. ``max_atoms=0`` used to filter every row away and report an empty dataset as a success, a NaN cut-off
    to keep or drop everything (a comparison with NaN is always false)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file or folder path, got {path!r}")
    for name, value in limits.items():
        if value is None:
            continue
        if name in ("max_atoms", "limit"):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a whole number ≥ 1 (or None for no limit), got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (or None for no cut-off), got {value!r}")
