"""Figures of an evaluation :class:`~mattergen_kit.evaluation.evaluate.Report` (matplotlib)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["make_figures"]

_CRYSTAL_SYSTEMS = [(1, 2, "triclinic"), (3, 15, "monoclinic"), (16, 74, "orthorhombic"), (75, 142, "tetragonal"),
                    (143, 167, "trigonal"), (168, 194, "hexagonal"), (195, 230, "cubic")]


def _crystal_system(n):
    for lo, hi, name in _CRYSTAL_SYSTEMS:
        if lo <= n <= hi:
            return name
    return "?"


def _num(df, col):
    return pd.to_numeric(df[col], errors="coerce").dropna().to_numpy() if col in df else np.zeros(0)


def make_figures(report) -> dict:
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget",
                                                "module://ipympl.backend_nbagg", "qtagg", "tkagg", "macosx"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df, s, ref = report.per_structure, report.summary, report.reference_stats or {}
    figs = {}

    # summary fractions
    keys = ["structural_validity", "compositional_validity", "uniqueness", "novelty", "stability", "sun"]
    vals = [s.get(k) for k in keys]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar(range(len(keys)), [v if v is not None else 0 for v in vals],
           color=["C0" if v is not None else "lightgrey" for v in vals])
    for i, v in enumerate(vals):
        ax.text(i, (v or 0) + 0.02, "n/a" if v is None else f"{v:.0%}", ha="center", fontsize=8)
    ax.set_xticks(range(len(keys)), [k.replace("_", "\n") for k in keys], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction of submitted")
    judged = f"\nstability: {s.get('relax_model')}, hull {s.get('hull')}, E_hull ≤ 0.1 eV/atom" if s.get("hull") else ""
    ax.set_title(f"evaluation of {s.get('n')} structures{judged}", fontsize=9)
    figs["summary"] = fig

    eh = _num(df, "e_above_hull")
    if len(eh):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(np.clip(eh, -0.5, 1.5), bins=40, color="C1")
        ax.axvline(0.1, color="k", ls="--", lw=1, label="stable ≤ 0.1 eV/atom")
        ax.axvline(-0.1, color="C3", ls="--", lw=1, label="suspect < −0.1 eV/atom")
        ax.axvline(0.0, color="grey", ls=":", lw=1)
        ax.set_title(f"{len(eh)} relaxed with {s.get('relax_model')}, hull {s.get('hull')}", fontsize=9)
        ax.set_xlabel("E above hull (eV/atom, clipped to [-0.5, 1.5])")
        ax.set_ylabel("structures")
        ax.legend(fontsize=8)
        figs["e_above_hull"] = fig

    sg = _num(df, "spacegroup").astype(int)
    if len(sg):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        names = [n for _, _, n in _CRYSTAL_SYSTEMS]
        gen = pd.Series([_crystal_system(x) for x in sg]).value_counts(normalize=True).reindex(names, fill_value=0)
        width = 0.4
        axes[0].bar(np.arange(7) - width / 2, gen.values, width, label="evaluated")
        rsg = ref.get("spacegroups")
        if rsg is not None and len(rsg):
            r = pd.Series([_crystal_system(int(x)) for x in rsg]).value_counts(normalize=True).reindex(names,
                                                                                                        fill_value=0)
            axes[0].bar(np.arange(7) + width / 2, r.values, width, label="reference")
        axes[0].set_xticks(range(7), names, rotation=40, fontsize=8)
        axes[0].set_ylabel("fraction")
        axes[0].legend(fontsize=8)
        axes[0].set_title("crystal systems")
        top = pd.Series(sg).value_counts().head(15)
        axes[1].bar([str(i) for i in top.index], top.values, color="C2")
        axes[1].set_xlabel("space group number (top 15)")
        axes[1].set_ylabel("structures")
        axes[1].tick_params(axis="x", labelsize=7)
        figs["spacegroups"] = fig

    cols = [("density", "density (g/cm³)"), ("n_atoms", "atoms per cell"), ("n_elements", "distinct elements")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, (c, label) in zip(axes, cols):
        g = _num(df, c)
        r = np.asarray(ref.get(c, []), float)
        bins = np.histogram_bin_edges(np.concatenate([g, r]) if len(r) else g, bins=25) if len(g) or len(r) else 10
        if c != "density" and (len(g) or len(r)):
            hi = int(max(g.max() if len(g) else 1, r.max() if len(r) else 1))
            bins = np.arange(0.5, hi + 1.5)
        if len(g):
            ax.hist(g, bins=bins, density=True, alpha=0.6, label="evaluated")
        if len(r):
            ax.hist(r, bins=bins, density=True, alpha=0.5, label="reference")
        ax.set_xlabel(label)
        ax.legend(fontsize=8)
    figs["distributions"] = fig

    bg, hh = _num(df, "band_gap_pred"), _num(df, "hhi_production")
    if len(bg) or len(hh):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        if len(bg):
            axes[0].hist(bg, bins=25, color="C4")
        axes[0].set_xlabel("predicted band gap (eV)")
        if len(hh):
            axes[1].hist(hh, bins=25, color="C5")
            axes[1].axvline(1500, color="k", ls="--", lw=1, label="HHI 1500")
            axes[1].legend(fontsize=8)
        axes[1].set_xlabel("HHI (production)")
        figs["properties"] = fig
    return figs
