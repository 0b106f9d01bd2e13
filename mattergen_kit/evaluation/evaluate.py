"""``evaluate()``: one call from generated crystals to a :class:`Report` (ref §11, design §6).

Stages (each per structure; one failing structure never stops the run, it gets a reason in ``error`` /
``validity_reason``):

1. validity: structural (d ≥ 0.5 Å, V ≥ 0.1 Å³), compositional (SMACT), bond sanity (covalent radii);
2. relaxation (``relax=True``): CHGNet (default, 32 structures per batched call; ``model="sevennet"``: SevenNet-0,
   one at a time) FIRE to fmax 0.1 eV/Å
   (≤ ``steps``), RMSD generated → relaxed; results are appended to ``out/relaxed.jsonl`` as they come and reused
   by a re-run (resume). Structurally invalid inputs are not relaxed;
3. uniqueness and novelty on the relaxed structures (the inputs when ``relax=False``) with StructureMatcher,
   novelty against ``reference``; composition novelty against the 35k MP-20 phases;
4. stability: formation energy from the potential's energy and its own fitted elemental references (CHGNet's or
   SevenNet's, :func:`~mattergen_kit.evaluation.hull.references_file`), E_hull against the DFT
   formation-energy hull of MP-20 phases + bundled structures (:mod:`~mattergen_kit.evaluation.hull`);
   ``stable``: E_hull ≤ 0.1 eV/atom, ``stable_0``: E_hull ≤ 0; S.U.N. = stable ∧ unique ∧ novel;
5. properties: space group, HHI, density, predicted band gap; distribution metrics against the reference.

Summary fractions are over **all submitted** structures (invalid ones count as failures), so ``n`` is the
denominator of every fraction; ``None`` marks a metric that was not computed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from mattergen_kit.evaluation.hull import STABILITY_THRESHOLD

__all__ = ["evaluate", "evaluate_cli", "EvaluationSettings", "Report", "load_structures"]

SUMMARY_KEYS = ("n", "structural_validity", "compositional_validity", "uniqueness", "novelty", "stability", "sun",
                "rmsd")
STRUCTURE_SUFFIXES = (".cif", ".extxyz", ".xyz", ".vasp", ".poscar", ".json")
RELAXED_EXTXYZ = "relaxed_crystals.extxyz"
CANDIDATES_DIR = "sun_candidates"   # the S.U.N. crystals' relaxed cells as CIFs, and their table


# ============================================================================================== input
def load_structures(path: str | os.PathLike) -> tuple[list, list[str], list[str]]:
    """Read every structure in a folder (``*.cif`` — all blocks —, ``*.extxyz``/``*.xyz`` — all frames —,
    ``POSCAR``/``*.vasp``, pymatgen ``*.json``) or a single file. Returns ``(structures, names, errors)``;
    a file that cannot be parsed gives one ``None`` entry with its error, so it shows up in the report."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    files = [path] if path.is_file() else _structure_files(path)
    structures, names, errors = [], [], []
    for f in files:
        rel = str(f.relative_to(path)) if path.is_dir() else f.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = _read_file(f)
            if not found:
                raise ValueError("no structure in file")
            for k, (s, name) in enumerate(found):
                bad = isinstance(s, Exception)  # one unreadable member of a zip
                structures.append(None if bad else s)
                names.append(name or (rel if len(found) == 1 else f"{rel}#{k}"))
                errors.append(f"parse error: {type(s).__name__}: {s}"[:300] if bad else "")
        except Exception as exc:  # noqa: BLE001
            structures.append(None)
            names.append(rel)
            errors.append(f"parse error: {type(exc).__name__}: {exc}"[:300])
    if not files:
        raise FileNotFoundError(f"no structure files ({', '.join(STRUCTURE_SUFFIXES)}, POSCAR) under {path}")
    return structures, names, errors


def _structure_files(folder: Path) -> list[Path]:
    """The structure files of a folder (hidden files and folders left out).

    A ``mattergen-kit generate`` folder holds every crystal three times (CIFs, ``generated_crystals.extxyz``,
    ``generated_crystals_cif.zip``): the collections are read only when no single-structure file is there
    (a MatterGen output folder), and then the extxyz alone.
    """
    from mattergen_kit.outputs import CIF_ZIP, EXTXYZ, MANIFEST

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and (p.suffix.lower() in STRUCTURE_SUFFIXES or p.name == CIF_ZIP
                        or p.name.upper().startswith(("POSCAR", "CONTCAR"))))
    collections = [p for p in files if p.name in (EXTXYZ, CIF_ZIP)]
    singles = [p for p in files if p.name not in (EXTXYZ, CIF_ZIP)]
    if singles:
        return singles
    return [p for p in collections if p.name == EXTXYZ] or collections


def _read_file(f: Path) -> list[tuple[Any, str | None]]:
    """``[(structure, name or None), ...]`` of one file (a zip: every CIF/extxyz inside, named by its path)."""
    from pymatgen.core import Structure

    suf = f.suffix.lower()
    if suf == ".zip":
        return _read_zip(f)
    if suf == ".cif":
        from pymatgen.io.cif import CifParser

        return [(s, None) for s in CifParser(str(f)).parse_structures(primitive=False)]
    if suf in (".extxyz", ".xyz"):
        from ase.io import read
        from pymatgen.io.ase import AseAtomsAdaptor

        return [(AseAtomsAdaptor.get_structure(a), str(a.info["file"]) if "file" in a.info else None)
                for a in read(str(f), index=":")]
    if suf == ".json":
        return [(Structure.from_dict(json.loads(f.read_text())), None)]
    return [(Structure.from_file(str(f)), None)]


def _read_zip(f: Path) -> list:
    import io

    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser

    from mattergen_kit.data.files import iter_structure_files

    found = []
    for name, raw, _ in iter_structure_files(f):
        text = raw.decode("utf-8", errors="replace")
        try:
            if name.lower().endswith(".cif"):
                found += [(s, name) for s in CifParser.from_str(text).parse_structures(primitive=False)]
            else:
                found += [(AseAtomsAdaptor.get_structure(a), f"{name}#{k}")
                          for k, a in enumerate(read(io.StringIO(text), index=":", format="extxyz"))]
        except Exception as exc:  # noqa: BLE001 - reported for this member, the others are still read
            found.append((exc, name))
    return found


def _as_structure(x):
    if x is None:
        return None
    if hasattr(x, "lattice") and hasattr(x, "frac_coords"):
        return x
    if hasattr(x, "get_cell"):  # ASE Atoms
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(x)
    raise TypeError(f"expected a pymatgen Structure or ASE Atoms, got {type(x).__name__}")


# ============================================================================================== report
@dataclass
class Report:
    """Result of :func:`evaluate`: ``per_structure`` (one row per submitted structure), ``summary`` (dict; keys
    ``n, structural_validity, compositional_validity, uniqueness, novelty, stability, sun, rmsd`` plus extras),
    ``structures`` (relaxed where relaxed, else the input; None if unreadable) and ``reference_stats``."""

    per_structure: pd.DataFrame
    summary: dict
    structures: list = field(default_factory=list, repr=False)
    reference_stats: dict = field(default_factory=dict, repr=False)
    out: Path | None = None

    def __repr__(self) -> str:
        core = ", ".join(f"{k}={_fmt(self.summary.get(k))}" for k in SUMMARY_KEYS)
        return f"Report({core})"

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in self.summary.items()
                       if not isinstance(v, (dict, list)))
        return f"<b>Evaluation report</b><table>{rows}</table>"

    def candidates(self, n: int | None = 10) -> pd.DataFrame:
        """The S.U.N. crystals — stable (E_hull ≤ 0.1 eV/atom), unique and novel — lowest E_hull first, at most ``n``
        (None: all): name, formula, atoms, E_hull (eV/atom), space group of the relaxed cell. Energies are the ML
        potential's after its relaxation, against the chosen hull: screening estimates for DFT to confirm.

        >>> report.candidates(5)                               # doctest: +SKIP
                     name  formula  n_atoms  e_above_hull spacegroup_symbol  spacegroup
        5  crystal_0005.cif   HfFeC2        4        -0.021            P4/mmm         123
        """
        df = self.per_structure
        columns = [c for c in ("name", "formula", "n_atoms", "e_above_hull", "spacegroup_symbol", "spacegroup")
                   if c in df]
        if not {"stable", "unique", "novel"} <= set(df.columns):
            return df.iloc[0:0][columns]
        chosen = df[_flag(df, "stable") & _flag(df, "unique") & _flag(df, "novel")]
        chosen = chosen.sort_values("e_above_hull")[columns]
        return chosen if n is None else chosen.head(n)

    def summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"value": {k: v for k, v in self.summary.items() if not isinstance(v, (dict, list))}})

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``per_structure.csv``, ``summary.json``, the relaxed crystals (``relaxed_crystals.extxyz``), the
        S.U.N. crystals' relaxed cells (``sun_candidates/*.cif`` and ``candidates.csv``) and the figures (PNG)
        into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.per_structure.to_csv(out / "per_structure.csv", index=False)
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary), indent=1))
        self.write_relaxed(out / RELAXED_EXTXYZ)
        self.write_candidates(out / CANDIDATES_DIR)
        self.plot(out=out, show=False)
        return out

    def write_relaxed(self, path: str | os.PathLike) -> int:
        """Write the relaxed structures (one extxyz frame each, ``name`` in the frame info) to ``path``; returns
        how many. Only structures that were relaxed successfully are written."""
        from mattergen_kit.outputs import atomic_write_text, extxyz_text

        df = self.per_structure
        relaxed = _flag(df, "relaxed")
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
        import re

        from pymatgen.io.cif import CifWriter

        from mattergen_kit.outputs import atomic_write_text

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
        from mattergen_kit.evaluation.plots import make_figures

        figs = make_figures(self)
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            for name, fig in figs.items():
                fig.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
        if not show:
            import matplotlib.pyplot as plt

            for fig in figs.values():
                plt.close(fig)
        return figs


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


# ============================================================================================== evaluate
_REF_INDEX: dict = {}


def _reference_index(structures, ids, name):
    from mattergen_kit.evaluation.matching import ReferenceIndex

    key = (name, len(structures)) if isinstance(name, str) and name.startswith("bundled-") else None
    if key is not None and key in _REF_INDEX:
        return _REF_INDEX[key]
    idx = ReferenceIndex(structures, ids)
    if key is not None:
        _REF_INDEX[key] = idx
    return idx


def _frac(values, n) -> float | None:
    if n == 0:
        return None
    return float(np.nansum(np.asarray(values, float)) / n)


# structures relaxed together by default with CHGNet (benchmarks/README.md: 8, 32 and 128 give the same throughput
# on one CPU core; 32 keeps a Dask task's chunk short enough to balance 1,000 structures over workers)
DEFAULT_BATCH_SIZE = 32


@dataclass
class EvaluationSettings:
    """Everything :func:`evaluate` needs besides the structures (the arguments of :func:`evaluate`)."""

    reference: Any = "bundled-train"
    relax: bool = True
    out: Path | None = None
    model: str = "chgnet"
    device: str | None = None
    fmax: float = 0.1
    steps: int = 300
    hull: str = "bundled"
    mp_api_key: str | None = None
    map_fn: Callable | None = None
    distribution: bool = True
    max_reference_fingerprints: int | None = 1000
    properties: bool = True
    band_gap: bool = True
    progress: bool = True
    callback: Callable[[int, dict], None] | None = None
    names: Sequence[str] | None = None
    torch_threads: int | None = 1
    cluster: Any = None
    batch_size: int | None = None

    def __post_init__(self):
        if self.batch_size is None:     # batched CHGNet: same relaxations as one at a time, ~3x the throughput
            self.batch_size = DEFAULT_BATCH_SIZE if self.model == "chgnet" else 1

    def check(self) -> None:
        """Fail fast, before any work, on a bad hull / model, a missing optional package, API key or references."""
        if self.hull not in ("bundled", "mp"):
            raise ValueError(f"hull must be 'bundled' or 'mp' (got {self.hull!r})")
        if self.cluster is not None and self.map_fn is not None:
            raise ValueError("give either cluster=... (Dask) or map_fn=..., not both")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {self.batch_size!r})")
        if self.batch_size > 1 and self.relax and self.model != "chgnet":
            raise ValueError(f"batch_size > 1 is implemented for model='chgnet', not {self.model!r}")
        if not self.relax:
            return
        if self.model == "sevennet":
            try:
                import sevenn  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("model='sevennet' needs the optional SevenNet package: pip install sevenn "
                                   "(or use the default model='chgnet')") from exc
        elif self.model != "chgnet":
            raise ValueError(f"unknown relaxation model {self.model!r}: use 'chgnet' (default) or 'sevennet'")
        if self.hull == "mp":
            from mattergen_kit.evaluation.hull import MaterialsProjectHull

            MaterialsProjectHull(self.mp_api_key)
        else:  # each potential needs its own fitted references (never another potential's)
            from mattergen_kit.evaluation.hull import ElementalReferences

            ElementalReferences.load(potential=self.model)


def evaluate(structures: Sequence | str | os.PathLike, reference: Any = "bundled-train", relax: bool = True,
             out: str | os.PathLike | None = None, *, model: str = "chgnet", device: str | None = None,
             fmax: float = 0.1, steps: int = 300, hull: str = "bundled", mp_api_key: str | None = None,
             map_fn: Callable | None = None, distribution: bool = True, max_reference_fingerprints: int | None = 1000,
             properties: bool = True, band_gap: bool = True, progress: bool = True,
             callback: Callable[[int, dict], None] | None = None, names: Sequence[str] | None = None,
             torch_threads: int | None = 1, cluster: Any = None, batch_size: int | None = None) -> Report:
    """Evaluate generated crystals; see the module docstring for the stages and definitions.

    Args:
        structures: pymatgen Structures (or ASE Atoms; None entries are reported as unreadable), or a folder /
            file of CIF / extxyz / POSCAR files, or a zip of CIF / extxyz files.
        reference: structures to measure novelty and distributions against: ``"bundled-train"`` (default),
            ``"bundled-val"``, ``"bundled-test"``, ``"bundled-all"``, a CrystalDataset, a list of Structures, or None.
        relax: relax with ``model`` and compute energies, E_hull, stability, S.U.N. and RMSD (else those are None).
        out: folder for ``relaxed.jsonl`` (written as it goes; a re-run with the same ``out`` resumes),
            ``per_structure.csv``, ``summary.json``, ``relaxed_crystals.extxyz`` and figures.
        model / device / fmax / steps: relaxation settings ("chgnet" or "sevennet"; "cpu", "cuda", None = auto).
        hull: ``"bundled"`` (DFT formation-energy hull of MP-20 phases + bundled data) or ``"mp"`` (Materials Project
            entries via mp-api; needs ``mp_api_key`` or ``MP_API_KEY``).
        map_fn: ``map_fn(func, items)`` used for the per-structure relaxations (Dask / Ray / multiprocessing map).
        distribution: compute coverage and Wasserstein metrics against ``reference`` (fingerprints of at most
            ``max_reference_fingerprints`` reference structures, cached on disk).
        callback: ``callback(k, result)`` after each newly relaxed structure (progress hooks, tests).
        torch_threads: torch threads per relaxation on CPU (default 1; BLAS is limited to one thread throughout,
            see :mod:`.relax` for why; parallelise across structures with ``map_fn`` instead).
        cluster: spread the relaxations over a Dask distributed cluster: a scheduler address
            (``"tcp://host:8786"``), a ``distributed.Client`` or a ``LocalCluster`` / ``SLURMCluster`` ...
            (:mod:`.cluster`); results, ``relaxed.jsonl`` and resuming are those of a local run.
        batch_size: relax this many structures at once, one batched potential call per FIRE step
            (:mod:`.relax_batched`; CHGNet only, same optimizer and energies as one at a time). Default: 32 with
            CHGNet, 1 (one at a time) with SevenNet; ``batch_size=1`` gives CHGNet's own ``StructOptimizer`` loop.
    """
    from threadpoolctl import threadpool_limits

    settings = EvaluationSettings(
        reference=reference, relax=relax, out=Path(out) if out is not None else None, model=model, device=device,
        fmax=fmax, steps=steps, hull=hull, mp_api_key=mp_api_key, map_fn=map_fn, distribution=distribution,
        max_reference_fingerprints=max_reference_fingerprints, properties=properties, band_gap=band_gap,
        progress=progress, callback=callback, names=names, torch_threads=torch_threads, cluster=cluster,
        batch_size=batch_size)
    with threadpool_limits(limits=1):  # BLAS / OpenMP on tiny matrices: one thread is fastest (see .relax)
        return _evaluate(structures, settings)


def _evaluate(structures, settings: EvaluationSettings) -> Report:
    """Run the stages in order; each adds columns to ``rows`` (one dict per submitted structure)."""
    t_start = time.perf_counter()
    settings.check()
    if settings.out is not None:
        settings.out.mkdir(parents=True, exist_ok=True)
    inputs, names, load_errors = _read_inputs(structures, settings.names)
    n = len(inputs)
    rows = [{"index": i, "name": names[i], "error": load_errors[i]} for i in range(n)]
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings[stage] = time.perf_counter() - t
        return result

    valid = timed("validity", _validity_stage, rows, inputs, load_errors)
    final = timed("relaxation", _relaxation_stage, rows, inputs, valid, settings) if settings.relax else list(inputs)
    timed("uniqueness", _uniqueness_stage, rows, final, valid, settings)
    ref_structs, ref_name = timed("novelty", _novelty_stage, rows, final, valid, settings)
    hull_meta: dict = {}
    if settings.relax:
        timed("stability", _stability, rows, final, settings.hull, settings.mp_api_key, settings.model, hull_meta)
    extras: dict = {}
    if settings.properties:
        timed("properties", _properties_stage, rows, final, valid, settings, extras)
    ref_stats: dict = {}
    if settings.distribution and ref_structs is not None:
        timed("distribution", _distribution_stage, final, valid, ref_structs, ref_name, settings, extras, ref_stats)
    if ref_structs is not None and settings.properties:
        ref_stats.setdefault("spacegroups", _reference_spacegroups(settings.reference))

    df = pd.DataFrame(rows)
    summary = _summarise(df, n, settings.relax, settings.reference is not None)
    summary.update(extras)
    summary["reference"] = ref_name
    summary["relax_model"] = settings.model if settings.relax else None
    summary.update(hull_meta)
    summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    summary["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
    report = Report(df, summary, final, ref_stats, settings.out)
    if settings.out is not None:
        report.save(settings.out)
    return report


def _read_inputs(structures, names) -> tuple[list, list[str], list[str]]:
    """``(structures or None, names, load errors)`` from a path or a sequence of Structures / ASE Atoms."""
    if isinstance(structures, (str, os.PathLike)):
        inputs, file_names, load_errors = load_structures(structures)
        names = names or file_names
    else:
        inputs, load_errors = [], []
        for x in structures:
            try:
                inputs.append(_as_structure(x))
                load_errors.append("" if x is not None else "no structure")
            except Exception as exc:  # noqa: BLE001
                inputs.append(None)
                load_errors.append(f"{type(exc).__name__}: {exc}")
    names = list(names) if names is not None else [str(i) for i in range(len(inputs))]
    return inputs, names, load_errors


def _validity_stage(rows, inputs, load_errors) -> list[bool]:
    """1. structural / compositional / bond validity; returns the structurally valid mask."""
    from mattergen_kit.evaluation.validity import check_structure

    for i, s in enumerate(inputs):
        if s is None:
            rows[i].update(structural_valid=False, validity_reason=load_errors[i] or "no structure",
                           compositional_valid=False, bond_ok=False)
            continue
        rows[i].update(formula=_safe(lambda: s.composition.reduced_formula), n_atoms=len(s),
                       n_elements=len(s.composition.elements), **check_structure(s))
    return [bool(r.get("structural_valid")) for r in rows]


@contextlib.contextmanager
def _fan_out(settings: EvaluationSettings):
    """The ``map_fn`` a stage spreads its slow per-structure work over: ``settings.map_fn``, or a map over the Dask
    cluster ``settings.cluster`` (connected for the stage), or None (this process)."""
    if settings.cluster is None:
        yield settings.map_fn
        return
    from mattergen_kit.evaluation.cluster import dask_cluster_map

    with dask_cluster_map(settings.cluster) as map_fn:
        yield map_fn


def _relaxation_stage(rows, inputs, valid, settings: EvaluationSettings) -> list:
    """2. relax the valid structures (resumable through ``out/relaxed.jsonl``); returns the final structures."""
    from pymatgen.core import Structure

    from mattergen_kit.evaluation.relax import RelaxSettings, relax_structures
    from mattergen_kit.evaluation.validity import structural_validity

    relax_settings = RelaxSettings(model=settings.model, device=settings.device, fmax=settings.fmax,
                                   steps=settings.steps, torch_threads=settings.torch_threads)
    store = settings.out / "relaxed.jsonl" if settings.out is not None else None
    with _fan_out(settings) as map_fn:
        results = relax_structures(inputs, relax_settings, store=store, map_fn=map_fn, progress=settings.progress,
                                   skip=[not v for v in valid], callback=settings.callback,
                                   batch_size=settings.batch_size)
    final = list(inputs)
    for i, r in enumerate(results):
        if r is None:
            if inputs[i] is not None and not valid[i]:
                rows[i]["relax_error"] = "not relaxed: structurally invalid"
            continue
        rows[i].update(relaxed=bool(r["ok"]), relax_error=r["error"], relax_steps=r["n_steps"],
                       relax_converged=r["converged"], relax_seconds=r["seconds"], energy=r["energy"],
                       energy_per_atom=r["energy_per_atom"], rmsd=r["rmsd"], rmsd_matched=r["rmsd_matched"])
        if r["ok"]:
            final[i] = Structure.from_dict(r["relaxed"])
            ok, _ = _safe(lambda: structural_validity(final[i]), (False, "?"))
            rows[i]["relaxed_structural_valid"] = ok
    return final


def _uniqueness_stage(rows, final, valid, settings: EvaluationSettings) -> None:
    """3a. unique among the submitted structures (StructureMatcher, formula-prefiltered)."""
    from mattergen_kit.evaluation import matching

    uniq = matching.unique_mask(final, usable=valid, progress=settings.progress and len(final) > 200)
    for row, u in zip(rows, uniq):
        row["unique"] = u


def _novelty_stage(rows, final, valid, settings: EvaluationSettings):
    """3b. novel against the reference, and composition novelty against MP-20; returns (reference, its name)."""
    from mattergen_kit.evaluation import matching

    ref_structs, ref_name = None, "none"
    n = len(final)
    if settings.reference is not None:
        from mattergen_kit.evaluation.reference import resolve_reference

        ref_structs, ref_ids, ref_name = resolve_reference(settings.reference)
        index = _reference_index(ref_structs, ref_ids, ref_name)
        nov, matched = matching.novel_mask(final, index, usable=valid, progress=settings.progress and n > 200)
        for i in range(n):
            rows[i]["novel"] = nov[i]
            rows[i]["matched_reference_id"] = matched[i]
    try:
        mp20 = matching.mp20_formulas()
        for i in range(n):
            f = rows[i].get("formula")
            rows[i]["novel_composition_mp20"] = bool(f not in mp20) if f and valid[i] else False
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"MP-20 composition novelty not computed: {exc}")
    return ref_structs, ref_name


def _properties_stage(rows, final, valid, settings: EvaluationSettings, extras: dict) -> None:
    """5a. space group, HHI, density and (``band_gap``) the predicted band gap of each valid structure."""
    from mattergen_kit.evaluation.properties import hhi, spacegroup

    for i, s in enumerate(final):
        if s is None or not valid[i]:
            continue
        num, sym = spacegroup(s)
        hp, hr = hhi(s.composition)
        rows[i].update(spacegroup=num, spacegroup_symbol=sym, hhi_production=hp, hhi_reserve=hr,
                       density=_safe(lambda: float(s.density)))
    if not settings.band_gap:
        return
    try:
        from mattergen_kit.evaluation.properties import band_gap_predictor

        pred = band_gap_predictor()
        idx = [i for i in range(len(final)) if final[i] is not None and valid[i]]
        vals = pred.predict([final[i].composition for i in idx])
        for i, v in zip(idx, vals):
            rows[i]["band_gap_pred"] = float(v)
        extras["band_gap_model_test_mae"] = pred.metrics.get("test_mae_eV")
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"band-gap prediction skipped: {exc}")


def _distribution_stage(final, valid, ref_structs, ref_name, settings: EvaluationSettings, extras: dict,
                        ref_stats: dict) -> None:
    """5b. coverage and Wasserstein distances against the reference."""
    try:
        with _fan_out(settings) as map_fn:   # the relaxations' cluster or map also computes the fingerprints
            extras.update(_distribution(final, valid, ref_structs, ref_name, settings.max_reference_fingerprints,
                                        settings.progress, ref_stats, map_fn))
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"distribution metrics skipped: {exc}")


def _safe(fn, default=None):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


def _stability(rows, final, hull, mp_api_key, model, meta):
    if hull == "mp":
        from mattergen_kit.evaluation.hull import MaterialsProjectHull

        mph = MaterialsProjectHull(mp_api_key)  # raises a clear error without a key
        for i, s in enumerate(final):
            e = rows[i].get("energy")
            if s is None or not rows[i].get("relaxed"):
                continue
            rows[i]["e_above_hull"] = _safe(lambda: mph.e_above_hull_from_energy(s, e), float("nan"))
        meta["hull"] = "materials-project (mp-api, MP2020-corrected)"
    elif hull == "bundled":
        from mattergen_kit.evaluation.hull import ElementalReferences

        refs = ElementalReferences.load(potential=model).require(model)  # μ fitted for this potential's energies
        chull = _hull_singleton()
        for i, s in enumerate(final):
            if s is None or not rows[i].get("relaxed"):
                continue
            missing = refs.missing(s.composition)
            if missing:
                rows[i]["hull_note"] = f"no {model} reference for {','.join(missing)}"
                continue
            ef = refs.formation_energy_per_atom(s.composition, rows[i]["energy"], s)
            rows[i]["e_form_per_atom"] = ef
            rows[i]["e_above_hull"] = _safe(lambda: chull.e_above_hull(s.composition, ef), float("nan"))
        meta["hull"] = f"bundled DFT formation-energy hull (MP-20 phases + bundled), {model} fitted elemental refs"
        meta["formation_energy_calibration"] = refs.meta.get("calibration")
    else:
        raise ValueError(f"hull must be 'bundled' or 'mp' (got {hull!r})")
    for r in rows:
        eh = r.get("e_above_hull")
        if eh is not None and np.isfinite(eh):
            r["stable"] = bool(eh <= STABILITY_THRESHOLD)
            r["stable_0"] = bool(eh <= 1e-8)
        else:
            r["stable"] = False
            r["stable_0"] = False


_HULL = None


def _hull_singleton():
    global _HULL
    if _HULL is None:
        from mattergen_kit.evaluation.hull import ConvexHull

        _HULL = ConvexHull()
    return _HULL


def _flag(df: pd.DataFrame, name: str) -> pd.Series:
    """A boolean column of the per-structure table: missing values (and a missing column) count as False."""
    return df[name].fillna(False).astype(bool) if name in df else pd.Series(False, index=df.index, dtype=bool)


def _summarise(df: pd.DataFrame, n: int, relaxed: bool, has_reference: bool) -> dict:
    s: dict[str, Any] = {"n": int(n)}
    s["structural_validity"] = _frac(_flag(df, "structural_valid"), n)
    s["compositional_validity"] = _frac(_flag(df, "compositional_valid"), n)
    s["valid"] = _frac(_flag(df, "structural_valid") & _flag(df, "compositional_valid"), n)
    s["bond_sanity"] = _frac(_flag(df, "bond_ok"), n)
    s["uniqueness"] = _frac(_flag(df, "unique"), n)
    s["novelty"] = _frac(_flag(df, "novel"), n) if has_reference else None
    s["novel_composition_mp20"] = (_frac(_flag(df, "novel_composition_mp20"), n) if "novel_composition_mp20" in df
                                   else None)
    if relaxed and "e_above_hull" in df:
        stable, stable0 = _flag(df, "stable"), _flag(df, "stable_0")
        s["stability"] = _frac(stable, n)
        s["stability_0"] = _frac(stable0, n)
        if has_reference:
            s["sun"] = _frac(stable & _flag(df, "unique") & _flag(df, "novel"), n)
            s["sun_0"] = _frac(stable0 & _flag(df, "unique") & _flag(df, "novel"), n)
        else:
            s["sun"] = s["sun_0"] = None
        eh = pd.to_numeric(df["e_above_hull"], errors="coerce")
        s["mean_e_above_hull"] = float(eh.mean()) if eh.notna().any() else None
        s["n_with_e_above_hull"] = int(eh.notna().sum())
    else:
        s["stability"] = s["stability_0"] = s["sun"] = s["sun_0"] = None
    if relaxed and "rmsd" in df and pd.to_numeric(df["rmsd"], errors="coerce").notna().any():
        s["rmsd"] = float(pd.to_numeric(df["rmsd"], errors="coerce").mean())
        s["relaxed_ok"] = _frac(_flag(df, "relaxed"), n)
        s["relax_converged"] = _frac(_flag(df, "relax_converged"), n)
    else:
        s["rmsd"] = None
    return s


def _distribution(final, valid, ref_structs, ref_name, max_ref, progress, ref_stats, map_fn=None) -> dict:
    from mattergen_kit.evaluation.distribution import (coverage, fingerprints, reference_fingerprints,
                                                       wasserstein_metrics)

    gen = [s if (s is not None and v) else None for s, v in zip(final, valid)]
    ref = reference_fingerprints(ref_structs, ref_name, max_n=max_ref, progress=progress)
    sf, cf = fingerprints(gen, progress=progress, desc="fingerprints", map_fn=map_fn)
    cov = coverage(sf, cf, ref["struct"], ref["comp"])
    out = {"cov_recall": cov["cov_recall"], "cov_precision": cov["cov_precision"],
           "n_reference_fingerprints": cov["n_ref"]}
    out.update(wasserstein_metrics([g for g in gen if g is not None], ref["structures_meta"]))
    ref_stats.update(ref["structures_meta"])
    return out


def _reference_spacegroups(reference):
    try:
        if isinstance(reference, str):
            from mattergen_kit.evaluation.reference import bundled

            p = bundled(reference.split("-", 1)[1]).properties
            if "spacegroup" in p:
                return p["spacegroup"].dropna().astype(int).to_numpy()
    except Exception:  # noqa: BLE001
        pass
    return None


# ============================================================================================== CLI
def _print_candidates(report: Report, n: int = 10) -> int:
    """The best S.U.N. crystals as a small table (nothing when there are none or nothing was relaxed); returns how
    many S.U.N. crystals there are."""
    top = report.candidates(None)
    if top.empty:
        return 0
    model = report.summary.get("relax_model") or "the ML potential"
    print(f"\nS.U.N. crystals: {len(top)} (E_hull <= 0.1 eV/atom after relaxation with {model}: screening "
          f"estimates, confirm with DFT){'; the ' + str(n) + ' lowest' if len(top) > n else ''}")
    for _, row in top.head(n).iterrows():
        sg = f"{row.get('spacegroup_symbol')} ({int(row['spacegroup'])})" if pd.notna(row.get("spacegroup")) else "?"
        print(f"  {row.get('name', ''):<24} {row.get('formula', ''):<16} {int(row['n_atoms']):>3} atoms  "
              f"E_hull {row['e_above_hull']:+.3f} eV/atom  {sg}")
    return len(top)


def _cli_problem(args) -> str | None:
    """The first user mistake in the evaluate arguments (checked before any work), or None."""
    if not Path(args.dir).exists():
        return f"{args.dir} does not exist (give a folder or file of CIF / extxyz / POSCAR structures, or a .zip)"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return f"--out {args.out} is a file, not a folder"
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {args.out}: cannot create a folder under {parent}"
    if args.steps < 1:
        return f"--steps must be at least 1, got {args.steps}"
    if not args.fmax > 0:
        return f"--fmax must be > 0, got {args.fmax}"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    if args.batch_size is not None and args.batch_size > 1 and args.model != "chgnet":
        return f"--batch-size > 1 is implemented for --model chgnet, not {args.model}"
    if args.max_reference_fingerprints < 1:
        return f"--max-reference-fingerprints must be at least 1, got {args.max_reference_fingerprints}"
    if args.device is not None:
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            return f"--device {args.device}: CUDA is not available on this machine (use --device cpu)"
    return None


def evaluate_cli(argv: Sequence[str] | None = None) -> int:
    """``mattergen-kit evaluate DIR --out OUT [--no-relax] [--reference NAME] ...``; returns the exit code."""
    p = argparse.ArgumentParser(prog="mattergen-kit evaluate",
                                description="Evaluate generated crystals (CIF / extxyz / POSCAR files in DIR): "
                                            "validity, uniqueness, novelty, CHGNet stability, S.U.N., RMSD, "
                                            "distribution metrics. Writes OUT/per_structure.csv, OUT/summary.json, "
                                            "figures, and OUT/relaxed.jsonl (re-running resumes).")
    p.add_argument("dir", help="folder (or file) of structures")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-relax", action="store_true", help="skip relaxation (no stability / S.U.N. / RMSD)")
    p.add_argument("--reference", default="bundled-train",
                   help="bundled-train (default), bundled-val, bundled-test, bundled-all, none, or a folder of CIFs")
    p.add_argument("--model", default="chgnet", choices=["chgnet", "sevennet"],
                   help="ML potential for relaxation and E_hull: chgnet (default) or sevennet (SevenNet-0, optional "
                        "extra, ~10x slower on CPU; docs/evaluation_potentials.md)")
    p.add_argument("--device", default=None, help="cpu / cuda (default: auto)")
    p.add_argument("--fmax", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--hull", default="bundled", choices=["bundled", "mp"])
    p.add_argument("--no-distribution", action="store_true", help="skip coverage / Wasserstein metrics")
    p.add_argument("--max-reference-fingerprints", type=int, default=1000)
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="spread the relaxations over a Dask distributed cluster, e.g. tcp://10.0.0.5:8786 (start it "
                        "with `dask scheduler` and `dask worker ADDRESS` on each machine; pip install "
                        "'mattergen_kit[cluster]'); results and resuming are those of a local run")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"relax this many structures at once with one batched CHGNet call per step (default "
                        f"{DEFAULT_BATCH_SIZE} with CHGNet, 1 with SevenNet; 1 = CHGNet's own one-at-a-time loop)")
    args = p.parse_args(argv)
    problem = _cli_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    ref: Any = args.reference
    if ref.lower() == "none":
        ref = None
    elif not ref.startswith("bundled-"):
        ref_path = Path(ref)
        if not ref_path.exists():
            p.error(f"--reference {ref!r}: not a bundled split name and not an existing folder")
        ref = [s for s in load_structures(ref_path)[0] if s is not None]
    try:
        report = evaluate(args.dir, reference=ref, relax=not args.no_relax, out=args.out, model=args.model,
                          device=args.device, fmax=args.fmax, steps=args.steps, hull=args.hull,
                          distribution=not args.no_distribution,
                          max_reference_fingerprints=args.max_reference_fingerprints,
                          cluster=args.dask_scheduler, batch_size=args.batch_size)
    except KeyboardInterrupt:
        print(f"interrupted: finished relaxations are kept in {args.out}/relaxed.jsonl; re-run the same command "
              "to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:  # ConnectionError is an OSError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k in SUMMARY_KEYS:
        print(f"{k:>24}: {_fmt(report.summary.get(k))}")
    extra = f", {args.out}/{CANDIDATES_DIR}/ (relaxed CIFs of the S.U.N. crystals)" if _print_candidates(report) else ""
    print(f"wrote {args.out}/per_structure.csv, {args.out}/summary.json{extra} and figures")
    return 0
