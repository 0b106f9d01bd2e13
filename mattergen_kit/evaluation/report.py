"""The result of :func:`~mattergen_kit.evaluation.evaluate`: the per-structure table, the summary and what is saved.

Definitions (the summary's fractions are over **all submitted** structures, so ``n`` is every fraction's denominator;
``None`` marks a metric that was not computed):

* ``stable``: E_hull ≤ 0.1 eV/atom (``threshold``) against the named hull **and not suspect** (unless
  ``count_suspect_as_stable``); ``stable_0``: E_hull ≤ 0 on the same terms;
* ``suspect``: E_hull < −0.1 eV/atom after relaxation — a crystal that far *below* a hull of known DFT phases is far
  more often an ML-potential failure or a missing reference phase than a discovery; listed apart with the likely
  reason (``suspect_reason``), never counted as stable by default;
* novelty, reported separately: ``novel`` (the structure matches none of ``reference``), ``matches_bundled`` (it
  matches one of the ~18,000 bundled structures, any split), ``known_composition`` (its reduced formula is a known
  Materials Project phase: MP-20 phases ∪ MP formation energies ∪ bundled structures, 47,032 formulas);
* S.U.N. (``sun``) = stable ∧ unique ∧ novel ∧ ¬matches_bundled ∧ ¬known_composition: a new crystal of a new
  composition. ``sun_new_structure`` drops the composition test (a new polymorph of a known composition counts:
  MatterGen's structure-only definition, but the MP formation energies carry no structures, so such a polymorph may
  still be known to MP). ``*_mp20`` columns and keys repeat E_hull / stability / S.U.N. against the old ``mp20`` hull
  with the old rules (suspects counted, structure novelty only), to compare with figures published before 2026-12.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.io.cif import CifWriter

from mattergen_kit.evaluation.plots import make_figures
from mattergen_kit.outputs import atomic_write_text, extxyz_text

__all__ = ["Report", "summarise", "flag", "SUMMARY_KEYS", "TABLE_COLUMNS", "print_summary"]

SUMMARY_KEYS = ("n", "structural_validity", "compositional_validity", "uniqueness", "novelty", "stability", "sun",
                "rmsd")
RELAXED_EXTXYZ = "relaxed_crystals.extxyz"
CANDIDATES_DIR = "sun_candidates"   # the S.U.N. crystals' relaxed cells as CIFs, and their table
SUSPECTS_CSV = "suspects.csv"
#: the columns of :attr:`Report.table` (those present), in this order
TABLE_COLUMNS = ("name", "formula", "n_atoms", "e_above_hull", "e_above_hull_mp20", "stable", "suspect",
                 "suspect_reason", "unique", "novel", "matches_bundled", "matched_bundled_id", "known_composition",
                 "known_composition_id", "sun", "e_above_hull_sevennet", "second_opinion_disagrees",
                 "spacegroup_symbol", "spacegroup")


def flag(df: pd.DataFrame, name: str) -> pd.Series:
    """A boolean column of the per-structure table: missing values (and a missing column) count as False."""
    if name not in df:
        return pd.Series(False, index=df.index, dtype=bool)
    column = df[name].astype(object)
    return column.where(column.notna(), False).astype(bool)


def _frac(values, n) -> float | None:
    if n == 0:
        return None
    return float(np.nansum(np.asarray(values, float)) / n)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(float(o)) else float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def summarise(df: pd.DataFrame, n: int, relaxed: bool, has_reference: bool) -> dict:
    """The summary fractions of a per-structure table (module docstring)."""
    s: dict[str, Any] = {"n": int(n)}
    s["structural_validity"] = _frac(flag(df, "structural_valid"), n)
    s["compositional_validity"] = _frac(flag(df, "compositional_valid"), n)
    s["valid"] = _frac(flag(df, "structural_valid") & flag(df, "compositional_valid"), n)
    s["bond_sanity"] = _frac(flag(df, "bond_ok"), n)
    s["uniqueness"] = _frac(flag(df, "unique"), n)
    s["novelty"] = _frac(flag(df, "novel"), n) if has_reference else None
    usable = flag(df, "structural_valid")
    s["novelty_vs_bundled_structures"] = (_frac(usable & ~flag(df, "matches_bundled"), n) if "matches_bundled" in df
                                          else None)
    s["novelty_composition"] = (_frac(usable & ~flag(df, "known_composition"), n) if "known_composition" in df
                                else None)
    s["novel_composition_mp20"] = (_frac(flag(df, "novel_composition_mp20"), n) if "novel_composition_mp20" in df
                                   else None)
    if relaxed and "e_above_hull" in df:
        stable, stable0, unique = flag(df, "stable"), flag(df, "stable_0"), flag(df, "unique")
        novel = flag(df, "novel") & ~flag(df, "matches_bundled")
        new_composition = ~flag(df, "known_composition") if "known_composition" in df else True
        s["stability"] = _frac(stable, n)
        s["stability_0"] = _frac(stable0, n)
        s["n_suspect"] = int(flag(df, "suspect").sum())
        if has_reference:
            s["sun"] = _frac(stable & unique & novel & new_composition, n)
            s["sun_0"] = _frac(stable0 & unique & novel & new_composition, n)
            s["sun_new_structure"] = _frac(stable & unique & novel, n)
        else:
            s["sun"] = s["sun_0"] = s["sun_new_structure"] = None
        eh = pd.to_numeric(df["e_above_hull"], errors="coerce")
        s["mean_e_above_hull"] = float(eh.mean()) if eh.notna().any() else None
        s["n_with_e_above_hull"] = int(eh.notna().sum())
        if "e_above_hull_mp20" in df:   # the old hull, old rules (suspects counted, structure novelty only)
            eh_old = pd.to_numeric(df["e_above_hull_mp20"], errors="coerce")
            stable_old = eh_old <= 0.1
            s["stability_mp20"] = _frac(stable_old, n)
            s["sun_mp20"] = _frac(stable_old & unique & flag(df, "novel"), n) if has_reference else None
    else:
        s["stability"] = s["stability_0"] = s["sun"] = s["sun_0"] = None
    if relaxed and "rmsd" in df and pd.to_numeric(df["rmsd"], errors="coerce").notna().any():
        s["rmsd"] = float(pd.to_numeric(df["rmsd"], errors="coerce").mean())
        s["relaxed_ok"] = _frac(flag(df, "relaxed"), n)
        s["relax_converged"] = _frac(flag(df, "relax_converged"), n)
    else:
        s["rmsd"] = None
    return s


@dataclass
class Report:
    """Result of :func:`evaluate`: ``per_structure`` (one row per submitted structure), ``summary`` (dict; keys
    ``n, structural_validity, compositional_validity, uniqueness, novelty, stability, sun, rmsd`` plus extras, and
    the hull, potential and threshold the stability figures were judged with), ``structures`` (relaxed where
    relaxed, else the input; None if unreadable) and ``reference_stats``."""

    per_structure: pd.DataFrame
    summary: dict
    structures: list = field(default_factory=list, repr=False)
    reference_stats: dict = field(default_factory=dict, repr=False)
    out: Path | None = None

    def __repr__(self) -> str:
        core = ", ".join(f"{k}={_fmt(self.summary.get(k))}" for k in SUMMARY_KEYS)
        hull = f", hull={self.summary['hull']!r}" if self.summary.get("hull") else ""
        return f"Report({core}{hull})"

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in self.summary.items()
                       if not isinstance(v, (dict, list)))
        return f"<b>Evaluation report</b> ({self.judged_by()})<table>{rows}</table>"

    def judged_by(self) -> str:
        """One line: hull, potential, threshold and sample count behind the stability and S.U.N. figures."""
        s = self.summary
        if s.get("stability") is None:
            return f"n = {s.get('n')}, not relaxed (no stability)"
        return (f"hull {s.get('hull_description') or s.get('hull')}; potential {s.get('relax_model')}; stable: "
                f"E_hull <= {s.get('stability_threshold', 0.1)} eV/atom, suspects (E_hull < "
                f"-{s.get('suspect_threshold', 0.1)}) not counted; n = {s.get('n')}")

    @property
    def table(self) -> pd.DataFrame:
        """The per-structure verdicts (:data:`TABLE_COLUMNS` that were computed): E_hull against the default hull
        and the old ``mp20`` one, the suspect flag and reason, novelty (structure, bundled structures, composition),
        S.U.N. and the second opinion."""
        df = self.per_structure
        return df[[c for c in TABLE_COLUMNS if c in df]]

    def candidates(self, n: int | None = 10) -> pd.DataFrame:
        """The S.U.N. crystals (``sun`` column: module docstring), lowest E_hull first, at most ``n`` (None: all):
        name, formula, atoms, E_hull (eV/atom), space group of the relaxed cell, and the second opinion where it was
        asked for. Energies are the ML potential's after its relaxation: screening estimates for DFT to confirm.

        >>> report.candidates(5)                               # doctest: +SKIP
                     name  formula  n_atoms  e_above_hull spacegroup_symbol  spacegroup
        5  crystal_0005.cif   HfFeC2        4        -0.021            P4/mmm         123
        """
        df = self.per_structure
        columns = [c for c in ("name", "formula", "n_atoms", "e_above_hull", "spacegroup_symbol", "spacegroup",
                               "e_above_hull_sevennet", "second_opinion_disagrees") if c in df]
        if "sun" not in df:
            return df.iloc[0:0][columns]
        chosen = df[flag(df, "sun")].sort_values("e_above_hull")[columns]
        return chosen if n is None else chosen.head(n)

    def suspects(self) -> pd.DataFrame:
        """Crystals more than 0.1 eV/atom below the hull (never counted as stable unless asked), lowest first, with
        the likely reason."""
        df = self.per_structure
        columns = [c for c in ("name", "formula", "n_atoms", "e_above_hull", "e_above_hull_mp20", "suspect_reason",
                               "e_above_hull_sevennet", "second_opinion_disagrees") if c in df]
        if "suspect" not in df:
            return df.iloc[0:0][columns]
        return df[flag(df, "suspect")].sort_values("e_above_hull")[columns]

    def summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"value": {k: v for k, v in self.summary.items() if not isinstance(v, (dict, list))}})

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``per_structure.csv``, ``summary.json``, ``suspects.csv`` (when there are any), the relaxed crystals
        (``relaxed_crystals.extxyz``), the S.U.N. crystals' relaxed cells (``sun_candidates/*.cif`` and
        ``candidates.csv``) and the figures (PNG) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.per_structure.to_csv(out / "per_structure.csv", index=False)
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary), indent=1))
        suspects = self.suspects()
        if len(suspects):
            suspects.to_csv(out / SUSPECTS_CSV, index=False)
        else:
            (out / SUSPECTS_CSV).unlink(missing_ok=True)
        self.write_relaxed(out / RELAXED_EXTXYZ)
        self.write_candidates(out / CANDIDATES_DIR)
        self.plot(out=out, show=False)
        return out

    def write_relaxed(self, path: str | os.PathLike) -> int:
        """Write the relaxed structures (one extxyz frame each, ``name`` in the frame info) to ``path``; returns
        how many. Only structures that were relaxed successfully are written."""
        df = self.per_structure
        relaxed = flag(df, "relaxed")
        picked = [i for i in range(len(df)) if relaxed.iloc[i] and self.structures[i] is not None]
        if not picked:
            return 0
        atomic_write_text(Path(path), extxyz_text([self.structures[i] for i in picked],
                                                  [str(df["name"].iloc[i]) for i in picked]))
        return len(picked)

    def write_candidates(self, folder: str | os.PathLike) -> int:
        """Write the relaxed cell of every S.U.N. crystal (:meth:`candidates`) as ``folder/<name>.cif`` and the table
        as ``folder/candidates.csv`` — what to look at in VESTA or send to DFT; returns how many (nothing is written
        when there are none)."""
        folder = Path(folder)
        listing = folder / "candidates.csv"
        previous = set()
        if listing.is_file():   # an earlier save into the same folder: its files go unless listed again
            try:
                previous = set(pd.read_csv(listing)["cif"].astype(str))
            except Exception:  # noqa: BLE001 - an unreadable listing: leave its files alone
                previous = set()
        table = self.candidates(None)
        if table.empty:
            for name in previous:
                (folder / Path(name).name).unlink(missing_ok=True)
            listing.unlink(missing_ok=True)
            return 0
        folder.mkdir(parents=True, exist_ok=True)
        files, taken = [], set()
        for i, row in table.iterrows():
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(row.get("name", i))).stem) or f"crystal_{i}"
            name = stem if stem not in taken else f"{stem}_{i}"
            taken.add(name)
            atomic_write_text(folder / f"{name}.cif", str(CifWriter(self.structures[i])))
            files.append(f"{name}.cif")
        atomic_write_text(listing, table.assign(cif=files).to_csv(index=False))
        for name in previous - set(files):
            (folder / Path(name).name).unlink(missing_ok=True)
        return len(files)

    def plot(self, out: str | os.PathLike | None = None, show: bool = True) -> dict:
        """Figures (matplotlib): summary fractions, E_hull histogram, space groups, density / #atoms / #elements
        against the reference, predicted band gap and HHI. Saved as PNG in ``out`` when given."""
        figs = make_figures(self)
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            for name, fig in figs.items():
                fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
        if not show:
            import matplotlib.pyplot as plt  # heavy, and plots.make_figures picks the backend first

            for fig in figs.values():
                plt.close(fig)
        return figs


def print_summary(report: Report, n: int = 10) -> int:
    """Print the summary, the hull / potential / threshold behind it, the best S.U.N. crystals and the suspects;
    returns how many S.U.N. crystals there are."""
    s = report.summary
    for k in SUMMARY_KEYS:
        print(f"{k:>24}: {_fmt(s.get(k))}")
    if s.get("stability") is not None:
        print(f"{'judged by':>24}: {report.judged_by()}")
        if s.get("novelty_composition") is not None:
            print(f"{'novelty':>24}: structure vs {s.get('reference')} {_fmt(s.get('novelty'))}, vs all bundled "
                  f"structures {_fmt(s.get('novelty_vs_bundled_structures'))}, composition unknown to Materials "
                  f"Project {_fmt(s.get('novelty_composition'))} (S.U.N. needs all three)")
        if s.get("stability_mp20") is not None:
            print(f"{'old mp20 hull':>24}: stability {_fmt(s['stability_mp20'])}, S.U.N. {_fmt(s.get('sun_mp20'))} "
                  "(MP-20 phases only, suspects counted, structure novelty only)")
        if s.get("second_opinion"):
            so = s["second_opinion"]
            print(f"{'second opinion':>24}: {so['potential']} on {so['n_checked']} crystals, {so['n_disagree']} "
                  f"disagree by > {so['disagreement_threshold']} eV/atom on E_hull "
                  f"({_fmt(so.get('seconds_per_candidate'))} s per crystal)")
    top = report.candidates(None)
    if not top.empty:
        model = s.get("relax_model") or "the ML potential"
        print(f"\nS.U.N. crystals: {len(top)} (E_hull <= 0.1 eV/atom after relaxation with {model}, hull "
              f"{s.get('hull')}: screening estimates, confirm with DFT){'; the ' + str(n) + ' lowest' if len(top) > n else ''}")
        for _, row in top.head(n).iterrows():
            sg = f"{row.get('spacegroup_symbol')} ({int(row['spacegroup'])})" if pd.notna(row.get("spacegroup")) else "?"
            second = ""
            if pd.notna(row.get("e_above_hull_sevennet")):
                second = f"  SevenNet {row['e_above_hull_sevennet']:+.3f}" + (
                    " DISAGREES" if bool(row.get("second_opinion_disagrees")) else "")
            print(f"  {row.get('name', ''):<24} {row.get('formula', ''):<16} {int(row['n_atoms']):>3} atoms  "
                  f"E_hull {row['e_above_hull']:+.3f} eV/atom  {sg}{second}")
    suspects = report.suspects()
    if len(suspects):
        print(f"\nSuspect (E_hull < -0.1 eV/atom, not counted as stable): {len(suspects)}")
        for _, row in suspects.head(n).iterrows():
            print(f"  {row.get('name', ''):<24} {row.get('formula', ''):<16} E_hull {row['e_above_hull']:+.3f}  "
                  f"{row.get('suspect_reason', '')}")
    return len(top)
