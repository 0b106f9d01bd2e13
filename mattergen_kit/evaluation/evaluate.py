"""``evaluate()``: one call from generated crystals to a :class:`~.report.Report` (ref §11, design §6).

The work is split in three modules: :mod:`.inputs` (reading the crystals), :mod:`.stages` (validity, relaxation,
uniqueness, novelty, stability against a named hull with suspect flags, the second opinion, properties,
distribution; each stage's definition is written there) and :mod:`.report` (the per-structure table, the summary,
S.U.N., what is saved and printed). This module runs the stages in order and holds the CLI.

Summary fractions are over **all submitted** structures (invalid ones count as failures), so ``n`` is the
denominator of every fraction; ``None`` marks a metric that was not computed. Every stability / S.U.N. figure comes
with the hull (``summary["hull"]``, ``hull_sources``), the potential (``relax_model``) and the threshold
(``stability_threshold``) it was judged with.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from threadpoolctl import threadpool_limits

from mattergen_kit.evaluation import stages
from mattergen_kit.evaluation.inputs import STRUCTURE_SUFFIXES, load_structures, read_inputs  # noqa: F401
from mattergen_kit.evaluation.report import (CANDIDATES_DIR, RELAXED_EXTXYZ, SUMMARY_KEYS, Report,  # noqa: F401
                                             print_summary, summarise)
from mattergen_kit.evaluation.stages import DEFAULT_BATCH_SIZE, HULL_CHOICES, EvaluationSettings
from mattergen_kit.sampling.request import device_problem

__all__ = ["evaluate", "evaluate_cli", "EvaluationSettings", "Report", "load_structures"]

# names other modules used before the split (conditioning's adherence study, benchmarks)
_reference_index = stages.reference_index
_hull_singleton = stages.hull_singleton


def evaluate(structures: Sequence | str | os.PathLike, reference: Any = "bundled-train", relax: bool = True,
             out: str | os.PathLike | None = None, *, model: str = "chgnet", device: str | None = None,
             fmax: float = 0.1, steps: int = 300, hull: str = "bundled", mp_api_key: str | None = None,
             map_fn: Callable | None = None, distribution: bool = True, max_reference_fingerprints: int | None = 1000,
             properties: bool = True, band_gap: bool = True, progress: bool = True,
             callback: Callable[[int, dict], None] | None = None, names: Sequence[str] | None = None,
             torch_threads: int | None = 1, cluster: Any = None, batch_size: int | None = None,
             second_opinion: str | None = None, count_suspect_as_stable: bool = False,
             max_relax_atoms: int = 200) -> Report:
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
        hull: ``"bundled"`` (default) = ``"mp20+mpfe"``, the DFT formation-energy hull of the MP-20 phases, the bundled
            structures and the Materials Project formation energies (53,387 phases, :mod:`.reference`); ``"mp20"``
            (the old hull: MP-20 phases + bundled only); or ``"mp"`` (Materials Project entries via mp-api; needs
            ``mp_api_key`` or ``MP_API_KEY``). With a bundled hull, E_hull against ``"mp20"`` is added as
            ``e_above_hull_mp20`` for comparison with old figures.
        map_fn: ``map_fn(func, items)`` used for the per-structure relaxations (Dask / Ray / multiprocessing map).
        distribution: compute coverage and Wasserstein metrics against ``reference`` (fingerprints of at most
            ``max_reference_fingerprints`` reference structures, cached on disk).
        callback: ``callback(k, result)`` after each newly relaxed structure (progress hooks, tests).
        torch_threads: torch threads per relaxation on CPU (default 1; BLAS is limited to one thread throughout,
            see :mod:`.relax` for why; parallelise across structures with ``map_fn`` instead).
        cluster: spread the relaxations over a Dask distributed cluster: a scheduler address
            (``"tcp://host:8786"``), a ``distributed.Client`` or a ``LocalCluster`` / ``SLURMCluster`` ...
            (:mod:`.cluster`); results, ``relaxed.jsonl`` and resuming are those of a local run.
        max_relax_atoms: cells with more atoms are judged (validity, novelty) but not relaxed; their row says why
            (a 1,000-atom CIF would relax for ~10 min on a CPU). Default 200.
        batch_size: relax this many structures at once, one batched potential call per FIRE step
            (:mod:`.relax_batched`; CHGNet only, same optimizer and energies as one at a time). Default: 32 with
            CHGNet, 1 (one at a time) with SevenNet; ``batch_size=1`` gives CHGNet's own ``StructOptimizer`` loop.
        second_opinion: ``"sevennet"``: relax the S.U.N. crystals and the suspects again with SevenNet-0 and flag
            those whose two E_hull differ by more than 0.1 eV/atom (``second_opinion_disagrees``;
            ``summary["second_opinion"]`` has the counts and the seconds per crystal).
        count_suspect_as_stable: count crystals more than 0.1 eV/atom below the hull ("suspect") as stable (default:
            they are listed apart, :meth:`Report.suspects`, and not counted).
    """
    settings = EvaluationSettings(
        reference=reference, relax=relax, out=Path(out) if out is not None else None, model=model, device=device,
        fmax=fmax, steps=steps, hull=hull, mp_api_key=mp_api_key, map_fn=map_fn, distribution=distribution,
        max_reference_fingerprints=max_reference_fingerprints, properties=properties, band_gap=band_gap,
        progress=progress, callback=callback, names=names, torch_threads=torch_threads, cluster=cluster,
        batch_size=batch_size, second_opinion=second_opinion, count_suspect_as_stable=count_suspect_as_stable,
        max_relax_atoms=max_relax_atoms)
    with threadpool_limits(limits=1):  # BLAS / OpenMP on tiny matrices: one thread is fastest (see .relax)
        return _evaluate(structures, settings)


def _evaluate(structures, settings: EvaluationSettings) -> Report:
    """Run the stages in order (:mod:`.stages`); each adds columns to ``rows`` (one dict per submitted structure)."""
    t_start = time.perf_counter()
    settings.check()
    if settings.out is not None:
        settings.out.mkdir(parents=True, exist_ok=True)
    inputs, names, load_errors = read_inputs(structures, settings.names)
    n = len(inputs)
    rows = [{"index": i, "name": names[i], "error": load_errors[i]} for i in range(n)]
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timings[stage] = time.perf_counter() - t
        return result

    valid = timed("validity", stages.validity_stage, rows, inputs, load_errors)
    final = (timed("relaxation", stages.relaxation_stage, rows, inputs, valid, settings) if settings.relax
             else list(inputs))
    timed("uniqueness", stages.uniqueness_stage, rows, final, valid, settings)
    ref_structs, ref_name = timed("novelty", stages.novelty_stage, rows, final, valid, settings)
    hull_meta: dict = {}
    has_reference = settings.reference is not None
    if settings.relax:
        timed("stability", stages.stability_stage, rows, final, settings, hull_meta)
        stages.sun_flags(rows, has_reference)
        if settings.second_opinion:
            timed("second_opinion", stages.second_opinion_stage, rows, final, settings, hull_meta)
    extras: dict = {}
    if settings.properties:
        timed("properties", stages.properties_stage, rows, final, valid, settings, extras)
    ref_stats: dict = {}
    if settings.distribution and ref_structs is not None:
        timed("distribution", stages.distribution_stage, final, valid, ref_structs, ref_name, settings, extras,
              ref_stats)
    if ref_structs is not None and settings.properties:
        ref_stats.setdefault("spacegroups", stages.reference_spacegroups(settings.reference))

    df = pd.DataFrame(rows)
    summary = summarise(df, n, settings.relax, has_reference)
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


# ============================================================================================== CLI
def _cli_problem(args) -> str | None:
    """The first user mistake in the evaluate arguments (checked before any work), or None."""
    if not Path(args.dir).exists():
        return f"{args.dir} does not exist (give a folder or file of CIF / extxyz / POSCAR structures, or a .zip)"
    if not args.out.strip():
        return "--out needs a folder name (an empty one would write the report into the current folder)"
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
    if not (args.fmax > 0 and math.isfinite(args.fmax)):
        return f"--fmax must be a finite number > 0 (eV/Å, default 0.1), got {args.fmax}"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    if args.batch_size is not None and args.batch_size > 1 and args.model != "chgnet":
        return f"--batch-size > 1 is implemented for --model chgnet, not {args.model}"
    if args.max_reference_fingerprints < 1:
        return f"--max-reference-fingerprints must be at least 1, got {args.max_reference_fingerprints}"
    if args.second_opinion is not None and args.no_relax:
        return "--second-opinion needs relaxation (drop --no-relax)"
    if args.device is not None and (problem := device_problem(args.device)):
        return f"--{problem}"
    if args.dask_scheduler is not None and not args.dask_scheduler.strip():
        return "--dask-scheduler needs an address, e.g. tcp://10.0.0.5:8786"
    if args.dask_scheduler is not None and args.no_relax:
        return "--dask-scheduler spreads the relaxations over a cluster; with --no-relax there are none (drop one)"
    return None


def _reference_structures(path: Path) -> list:
    """The readable structures of a ``--reference`` folder or file (ValueError when there are none: novelty against
    nothing would count every crystal novel)."""
    try:
        structures = [s for s in load_structures(path)[0] if s is not None]
    except FileNotFoundError as err:
        raise ValueError(f"--reference {path}: {err}") from None
    if not structures:
        raise ValueError(f"--reference {path}: no readable structure in it; give a folder of CIF / extxyz files, a "
                         "bundled split name, or none")
    return structures


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
    p.add_argument("--hull", default="bundled", choices=list(HULL_CHOICES),
                   help="bundled (default) = mp20+mpfe: MP-20 phases + bundled structures + 33,758 Materials Project "
                        "formation energies; mp20: the old hull (MP-20 phases + bundled only); mp: Materials Project "
                        "via mp-api (needs MP_API_KEY)")
    p.add_argument("--second-opinion", default=None, choices=["sevennet"],
                   help="relax the S.U.N. crystals and the suspects again with SevenNet-0 and flag those where the two "
                        "potentials disagree by > 0.1 eV/atom on E_hull (needs the sevenn package)")
    p.add_argument("--count-suspect-as-stable", action="store_true",
                   help="count crystals more than 0.1 eV/atom below the hull as stable (default: listed apart)")
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
        try:
            ref = _reference_structures(ref_path)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        report = evaluate(args.dir, reference=ref, relax=not args.no_relax, out=args.out, model=args.model,
                          device=args.device, fmax=args.fmax, steps=args.steps, hull=args.hull,
                          distribution=not args.no_distribution,
                          max_reference_fingerprints=args.max_reference_fingerprints,
                          cluster=args.dask_scheduler, batch_size=args.batch_size,
                          second_opinion=args.second_opinion, count_suspect_as_stable=args.count_suspect_as_stable)
    except KeyboardInterrupt:
        print(f"interrupted: finished relaxations are kept in {args.out}/relaxed.jsonl; re-run the same command "
              "to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:  # ConnectionError is an OSError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors = report.per_structure["error"].fillna("").astype(str)
    if len(errors) and (errors != "").all():  # a folder of unreadable files is a mistake, not a 0 % result
        first = report.per_structure.iloc[0]
        print(f"error: none of the {len(errors)} input(s) could be read as a crystal structure (first: "
              f"{first['name']}: {errors.iloc[0][:200]}); {args.out}/per_structure.csv lists each", file=sys.stderr)
        return 2
    extra = f", {args.out}/{CANDIDATES_DIR}/ (relaxed CIFs of the S.U.N. crystals)" if print_summary(report) else ""
    print(f"wrote {args.out}/per_structure.csv, {args.out}/summary.json{extra} and figures")
    return 0
