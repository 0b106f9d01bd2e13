"""The stages of :func:`~mattergen_kit.evaluation.evaluate`, each adding columns to ``rows`` (one dict per submitted
structure; one failing structure never stops the run, it gets a reason in ``error`` / ``validity_reason``):

1. validity: structural (d ≥ 0.5 Å, V ≥ 0.1 Å³), compositional (SMACT), bond sanity (covalent radii);
2. relaxation (``relax=True``): CHGNet (default, 32 structures per batched call; ``model="sevennet"``: SevenNet-0,
   one at a time) FIRE to fmax 0.1 eV/Å (≤ ``steps``), RMSD generated → relaxed; results are appended to
   ``out/relaxed.jsonl`` as they come and reused by a re-run (resume). Structurally invalid inputs are not relaxed;
3. uniqueness and novelty on the relaxed structures (the inputs when ``relax=False``) with StructureMatcher:
   novelty against ``reference``; whether the structure matches any bundled structure (all splits); whether its
   reduced composition is a known Materials Project phase (:func:`~.reference.known_compositions`);
4. stability: formation energy from the potential's energy and its own fitted elemental references (:mod:`.hull`),
   E_hull against the named DFT formation-energy hull (default ``"mp20+mpfe"``, :mod:`.reference`) and, for
   comparison, against the old ``"mp20"`` hull; ``suspect`` below −0.1 eV/atom (with the likely reason);
   ``stable`` = E_hull ≤ 0.1 ∧ ¬suspect; S.U.N. (:mod:`.report`);
5. second opinion (``second_opinion="sevennet"``): the S.U.N. crystals and the suspects relaxed again with SevenNet
   from their CHGNet-relaxed cells, E_hull with SevenNet's own references, flagged where the two potentials differ
   by more than 0.1 eV/atom;
6. properties (space group, HHI, density, predicted band gap) and distribution metrics against the reference.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pymatgen.core import Composition

from mattergen_kit.data.safe_json import structure_from_dict
from mattergen_kit.evaluation import matching
from mattergen_kit.evaluation.cluster import dask_cluster_map
from mattergen_kit.evaluation.distribution import (coverage, fingerprints, reference_fingerprints,
                                                   wasserstein_metrics)
from mattergen_kit.evaluation.hull import (STABILITY_THRESHOLD, ConvexHull, ElementalReferences,
                                           MaterialsProjectHull)
from mattergen_kit.evaluation.properties import band_gap_predictor, hhi, spacegroup
from mattergen_kit.evaluation.reference import (BUNDLED_REFERENCES, DEFAULT_HULL, bundled, known_compositions,
                                               resolve_reference)
from mattergen_kit.evaluation.relax import SEVENNET_VARIANT, RelaxSettings, relax_structures
from mattergen_kit.evaluation.validity import check_structure, structural_validity
from mattergen_kit.sampling.request import device_problem

__all__ = ["EvaluationSettings", "DEFAULT_BATCH_SIZE", "SUSPECT_THRESHOLD", "DISAGREEMENT_THRESHOLD", "HULL_CHOICES",
           "hull_singleton", "reference_index"]

# structures relaxed together by default with CHGNet (benchmarks/README.md: 8, 32 and 128 give the same throughput
# on one CPU core; 32 keeps a Dask task's chunk short enough to balance 1,000 structures over workers)
DEFAULT_BATCH_SIZE = 32
SUSPECT_THRESHOLD = 0.1        # eV/atom below the hull: a suspect energy, not a discovery
DISAGREEMENT_THRESHOLD = 0.1   # eV/atom between two potentials' E_hull: the second opinion disagrees
HULL_CHOICES = ("bundled", "mp20+mpfe", "mp20", "mp")  # "bundled" = the default bundled hull, "mp20+mpfe"
SECOND_OPINIONS = ("sevennet",)
SECOND_OPINION_STORE = "second_opinion_{}.jsonl"


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
    second_opinion: str | None = None
    count_suspect_as_stable: bool = False
    max_relax_atoms: int = 200

    def __post_init__(self):
        if self.batch_size is None:     # batched CHGNet: same relaxations as one at a time, ~3x the throughput
            self.batch_size = DEFAULT_BATCH_SIZE if self.model == "chgnet" else 1

    @property
    def hull_name(self) -> str:
        """``"mp20+mpfe"``, ``"mp20"`` or ``"mp"`` (``"bundled"`` names the default bundled hull)."""
        return DEFAULT_HULL if self.hull == "bundled" else self.hull

    def check(self) -> None:
        """Fail fast, before any work, on a bad hull / model, a missing optional package, API key or references,
        and on a value no relaxation or comparison can use (fmax ≤ 0 or not finite, steps < 1, an unknown device,
        an empty reference ...): each used to run and report numbers computed with it (issue 24)."""
        self._check_numbers()
        self._check_reference()
        if self.out is not None and self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out={str(self.out)!r} is a file, not a folder; give a folder for the report")
        if self.model not in ("chgnet", "sevennet"):
            raise ValueError(f"unknown relaxation model {self.model!r}: use 'chgnet' (default) or 'sevennet'")
        if self.device is not None:
            problem = device_problem(self.device)
            if problem:
                raise ValueError(problem)
        if self.hull not in HULL_CHOICES:
            raise ValueError(f"hull must be one of {', '.join(repr(h) for h in HULL_CHOICES)} (got {self.hull!r}); "
                             f"'bundled' is the default bundled hull {DEFAULT_HULL!r}")
        if self.cluster is not None and self.map_fn is not None:
            raise ValueError("give either cluster=... (Dask) or map_fn=..., not both")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {self.batch_size!r})")
        if self.batch_size > 1 and self.relax and self.model != "chgnet":
            raise ValueError(f"batch_size > 1 is implemented for model='chgnet', not {self.model!r}")
        if self.second_opinion is not None:
            if self.second_opinion not in SECOND_OPINIONS:
                raise ValueError(f"second_opinion must be None or 'sevennet' (got {self.second_opinion!r})")
            if not self.relax:
                raise ValueError("second_opinion needs relax=True (it re-relaxes the S.U.N. crystals)")
            if self.second_opinion == self.model:
                raise ValueError(f"second_opinion={self.second_opinion!r} is the relaxation model itself: choose the "
                                 "other potential")
            if self.hull == "mp":
                raise ValueError("second_opinion works with the bundled hulls, not hull='mp'")
        if not self.relax:
            return
        for potential in (self.model, self.second_opinion):
            if potential == "sevennet" and importlib.util.find_spec("sevenn") is None:
                raise RuntimeError("SevenNet is an optional package: pip install sevenn (or use model='chgnet' "
                                   "without second_opinion)")
            if potential not in (None, "chgnet", "sevennet"):
                raise ValueError(f"unknown relaxation model {potential!r}: use 'chgnet' (default) or 'sevennet'")
        if self.hull == "mp":
            MaterialsProjectHull(self.mp_api_key)
        else:  # each potential needs its own fitted references (never another potential's)
            ElementalReferences.load(potential=self.model)
            if self.second_opinion:
                ElementalReferences.load(potential=self.second_opinion)


    def _check_numbers(self) -> None:
        if isinstance(self.fmax, bool) or not isinstance(self.fmax, Real) or not (math.isfinite(self.fmax)
                                                                                   and self.fmax > 0):
            raise ValueError(f"fmax must be a finite number of eV/Å > 0 (default 0.1), got {self.fmax!r}")
        # steps = 0: a single-point energy at the given geometry (no relaxation step), a documented use
        for name, value, low, optional in (("steps", self.steps, 0, False), ("torch_threads", self.torch_threads, 1, True),
                                           ("max_relax_atoms", self.max_relax_atoms, 1, False),
                                           ("max_reference_fingerprints", self.max_reference_fingerprints, 1, True)):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"{name} must be a whole number ≥ {low}{' (or None)' if optional else ''}, "
                                 f"got {value!r}")

    def _check_reference(self) -> None:
        ref = self.reference
        if ref is None or hasattr(ref, "structures"):
            return
        if isinstance(ref, str):
            if ref not in BUNDLED_REFERENCES:
                raise ValueError(f"reference {ref!r} is not one of {', '.join(BUNDLED_REFERENCES)}; give one of them, a "
                                 "CrystalDataset, a list of Structures, or None (no novelty)")
            return
        if not isinstance(ref, (list, tuple)):
            raise ValueError(f"reference must be a bundled split name, a CrystalDataset, a list of Structures or None, "
                             f"got {type(ref).__name__}")
        if not ref:
            raise ValueError("reference is an empty list: every crystal would count as novel; give structures, or "
                             "reference=None to skip novelty")


# ============================================================================================== shared objects
_REF_INDEX: dict = {}
_HULLS: dict[str, ConvexHull] = {}


def reference_index(structures, ids, name) -> matching.ReferenceIndex:
    """A :class:`~.matching.ReferenceIndex` of the reference (memoised per bundled split in this process)."""
    key = (name, len(structures)) if isinstance(name, str) and name.startswith("bundled-") else None
    if key is not None and key in _REF_INDEX:
        return _REF_INDEX[key]
    idx = matching.ReferenceIndex(structures, ids)
    if key is not None:
        _REF_INDEX[key] = idx
    return idx


def hull_singleton(name: str = DEFAULT_HULL) -> ConvexHull:
    """The named bundled hull (memoised: its phase diagrams are cached per chemical system)."""
    if name not in _HULLS:
        _HULLS[name] = ConvexHull(name)
    return _HULLS[name]


def safe(fn, default=None):
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


@contextlib.contextmanager
def fan_out(settings: EvaluationSettings):
    """The ``map_fn`` a stage spreads its slow per-structure work over: ``settings.map_fn``, or a map over the Dask
    cluster ``settings.cluster`` (connected for the stage), or None (this process)."""
    if settings.cluster is None:
        yield settings.map_fn
        return
    with dask_cluster_map(settings.cluster) as map_fn:
        yield map_fn


# ============================================================================================== 1-3
def validity_stage(rows, inputs, load_errors) -> list[bool]:
    """1. structural / compositional / bond validity; returns the structurally valid mask."""
    for i, s in enumerate(inputs):
        if s is None:
            rows[i].update(structural_valid=False, validity_reason=load_errors[i] or "no structure",
                           compositional_valid=False, bond_ok=False)
            continue
        rows[i].update(formula=safe(lambda: s.composition.reduced_formula), n_atoms=len(s),
                       n_elements=len(s.composition.elements), **check_structure(s))
    return [bool(r.get("structural_valid")) for r in rows]


def relaxation_stage(rows, inputs, valid, settings: EvaluationSettings) -> list:
    """2. relax the valid structures (resumable through ``out/relaxed.jsonl``); returns the final structures."""
    relax_settings = RelaxSettings(model=settings.model, device=settings.device, fmax=settings.fmax,
                                   steps=settings.steps, torch_threads=settings.torch_threads)
    store = settings.out / "relaxed.jsonl" if settings.out is not None else None
    # a cell far larger than generated ones (a 1,000-atom CIF relaxes for ~10 min on a CPU) is judged, not relaxed
    too_large = [s is not None and len(s) > settings.max_relax_atoms for s in inputs]
    with fan_out(settings) as map_fn:
        results = relax_structures(inputs, relax_settings, store=store, map_fn=map_fn, progress=settings.progress,
                                   skip=[not v or big for v, big in zip(valid, too_large)], callback=settings.callback,
                                   batch_size=settings.batch_size)
    final = list(inputs)
    for i, r in enumerate(results):
        if r is None:
            if inputs[i] is not None and not valid[i]:
                rows[i]["relax_error"] = "not relaxed: structurally invalid"
            elif too_large[i]:
                rows[i]["relax_error"] = (f"not relaxed: {len(inputs[i])} atoms, more than max_relax_atoms="
                                          f"{settings.max_relax_atoms} (a relaxation that size takes minutes to hours "
                                          "on a CPU); pass max_relax_atoms to relax it")
            continue
        rows[i].update(relaxed=bool(r["ok"]), relax_error=r["error"], relax_steps=r["n_steps"],
                       relax_converged=r["converged"], relax_seconds=r["seconds"], energy=r["energy"],
                       energy_per_atom=r["energy_per_atom"], rmsd=r["rmsd"], rmsd_matched=r["rmsd_matched"])
        if r["ok"]:
            final[i] = structure_from_dict(r["relaxed"], "relaxed.jsonl")
            ok, _ = safe(lambda: structural_validity(final[i]), (False, "?"))
            rows[i]["relaxed_structural_valid"] = ok
    return final


def uniqueness_stage(rows, final, valid, settings: EvaluationSettings) -> None:
    """3a. unique among the submitted structures (StructureMatcher, formula-prefiltered)."""
    uniq = matching.unique_mask(final, usable=valid, progress=settings.progress and len(final) > 200)
    for row, u in zip(rows, uniq):
        row["unique"] = u


def novelty_stage(rows, final, valid, settings: EvaluationSettings):
    """3b. novelty against the reference; a match with any bundled structure; whether the composition is a known
    Materials Project phase (and MP-20 composition novelty, as before). Returns (reference structures, its name)."""
    ref_structs, ref_name = None, "none"
    n = len(final)
    if settings.reference is not None:
        ref_structs, ref_ids, ref_name = resolve_reference(settings.reference)
        index = reference_index(ref_structs, ref_ids, ref_name)
        nov, matched = matching.novel_mask(final, index, usable=valid, progress=settings.progress and n > 200)
        for i in range(n):
            rows[i]["novel"] = nov[i]
            rows[i]["matched_reference_id"] = matched[i]
        _bundled_matches(rows, final, valid, ref_name)
    known = known_compositions()
    mp20 = matching.mp20_formulas()
    for i in range(n):
        f = rows[i].get("formula")
        usable = bool(f) and valid[i]
        rows[i]["known_composition"] = bool(usable and f in known)
        rows[i]["known_composition_id"] = known[f][0] if usable and f in known else None
        rows[i]["novel_composition_mp20"] = bool(usable and f not in mp20)
    return ref_structs, ref_name


def _bundled_matches(rows, final, valid, ref_name) -> None:
    """``matches_bundled`` / ``matched_bundled_id``: the structure matches one of the bundled structures (any
    split). A match with a bundled reference split is reused; only the structures novel against it are compared."""
    reference_is_bundled = isinstance(ref_name, str) and ref_name.startswith("bundled-")
    todo = [i for i in range(len(final)) if valid[i] and final[i] is not None
            and not (reference_is_bundled and rows[i].get("matched_reference_id") is not None)]
    for i in range(len(final)):
        hit = rows[i].get("matched_reference_id") if reference_is_bundled else None
        rows[i]["matches_bundled"] = hit is not None
        rows[i]["matched_bundled_id"] = hit
    if ref_name == "bundled-all" or not todo:
        return
    structs, ids, name = resolve_reference("bundled-all")
    index = reference_index(structs, ids, name)
    for i in todo:
        hit = index.match(final[i])
        rows[i]["matches_bundled"] = hit is not None
        rows[i]["matched_bundled_id"] = hit


# ============================================================================================== 4-5 stability
def stability_stage(rows, final, settings: EvaluationSettings, meta: dict) -> None:
    """4. formation energy, E_hull against the named hull (and the old ``mp20`` hull), suspect flags, ``stable``."""
    if settings.hull == "mp":
        mph = MaterialsProjectHull(settings.mp_api_key)  # raises a clear error without a key
        for i, s in enumerate(final):
            e = rows[i].get("energy")
            if s is None or not rows[i].get("relaxed"):
                continue
            rows[i]["e_above_hull"] = safe(lambda: mph.e_above_hull_from_energy(s, e), float("nan"))
        meta["hull"] = "materials-project (mp-api, MP2020-corrected)"
        meta["hull_description"] = meta["hull"]
    else:
        refs = ElementalReferences.load(potential=settings.model).require(settings.model)
        chull = hull_singleton(settings.hull_name)
        old = hull_singleton("mp20") if settings.hull_name != "mp20" else None
        for i, s in enumerate(final):
            if s is None or not rows[i].get("relaxed"):
                continue
            missing = refs.missing(s.composition)
            if missing:
                rows[i]["hull_note"] = f"no {settings.model} reference for {','.join(missing)}"
                continue
            ef = refs.formation_energy_per_atom(s.composition, rows[i]["energy"], s)
            rows[i]["e_form_per_atom"] = ef
            rows[i]["e_above_hull"] = safe(lambda: chull.e_above_hull(s.composition, ef), float("nan"))
            if old is not None:
                rows[i]["e_above_hull_mp20"] = safe(lambda: old.e_above_hull(s.composition, ef), float("nan"))
        meta.update(chull.meta())
        meta["formation_energy_calibration"] = refs.meta.get("calibration")
    meta.update(stability_threshold=STABILITY_THRESHOLD, suspect_threshold=SUSPECT_THRESHOLD,
                count_suspect_as_stable=settings.count_suspect_as_stable)
    chull = hull_singleton(settings.hull_name) if settings.hull != "mp" else None
    for r, s in zip(rows, final):
        eh = r.get("e_above_hull")
        finite = eh is not None and np.isfinite(eh)
        r["suspect"] = bool(finite and eh < -SUSPECT_THRESHOLD)
        if r["suspect"]:
            r["suspect_reason"] = suspect_reason(s.composition, r.get("e_form_per_atom"), chull)
        counted = finite and (not r["suspect"] or settings.count_suspect_as_stable)
        r["stable"] = bool(counted and eh <= STABILITY_THRESHOLD)
        r["stable_0"] = bool(counted and eh <= 1e-8)


def suspect_reason(composition, e_form: float | None, chull: ConvexHull | None) -> str:
    """The likely reason a crystal sits more than 0.1 eV/atom below the hull (module docstring of :mod:`.report`)."""
    comp = Composition(composition)
    system = "-".join(sorted(e.symbol for e in comp.elements))
    known = known_compositions().get(comp.reduced_formula)
    if known is not None and e_form is not None and np.isfinite(e_form) and e_form < known[1] - SUSPECT_THRESHOLD:
        return (f"potential failure likely: Materials Project's own {comp.reduced_formula} ({known[0]}) has "
                f"E_form {known[1]:+.3f} eV/atom, this relaxation {e_form:+.3f}")
    if chull is None:
        return "potential failure or a missing reference phase: check with DFT"
    elements = [e.symbol for e in comp.elements]
    n_all = len(chull.by_system.get(frozenset(elements), ()))
    return (f"potential failure or a missing reference phase in {system} ({n_all} known phases with all "
            f"{len(elements)} elements, {chull.n_phases(elements)} in the system incl. subsystems): ask "
            "second_opinion='sevennet'")


def sun_flags(rows, has_reference: bool) -> None:
    """``sun`` per row: stable ∧ unique ∧ novel ∧ ¬matches_bundled ∧ ¬known_composition (:mod:`.report`)."""
    for r in rows:
        r["sun"] = bool(has_reference and r.get("stable") and r.get("unique") and r.get("novel")
                        and not r.get("matches_bundled") and not r.get("known_composition"))


def second_opinion_stage(rows, final, settings: EvaluationSettings, meta: dict) -> None:
    """5. relax the S.U.N. crystals and the suspects again with ``settings.second_opinion`` (from their relaxed
    cells), E_hull with that potential's own references on the same hull; ``second_opinion_disagrees`` where the
    two E_hull differ by more than 0.1 eV/atom. Results go to ``out/second_opinion_<potential>.jsonl`` (resumable)."""
    potential = settings.second_opinion
    picked = [i for i, r in enumerate(rows) if r.get("relaxed") and final[i] is not None
              and (r.get("suspect") or r.get("sun"))]
    relax_settings = RelaxSettings(model=potential, device=settings.device, fmax=settings.fmax, steps=settings.steps,
                                   torch_threads=settings.torch_threads)
    store = settings.out / SECOND_OPINION_STORE.format(potential) if settings.out is not None else None
    with fan_out(settings) as map_fn:
        results = relax_structures([final[i] for i in picked], relax_settings, store=store, map_fn=map_fn,
                                   progress=settings.progress, batch_size=1)
    refs = ElementalReferences.load(potential=potential).require(potential)
    chull = hull_singleton(settings.hull_name)
    seconds, cpu = [], []
    for i, r in zip(picked, results):
        if r is None or not r["ok"]:
            rows[i]["second_opinion_error"] = (r or {}).get("error", "not relaxed")
            continue
        s = structure_from_dict(r["relaxed"], "relaxed.jsonl")
        ef = refs.formation_energy_per_atom(s.composition, r["energy"], s)
        eh = safe(lambda: chull.e_above_hull(s.composition, ef), float("nan"))
        seconds.append(r["seconds"])
        cpu.append(r.get("cpu_seconds", np.nan))
        rows[i][f"e_above_hull_{potential}"] = eh
        rows[i]["second_opinion_disagrees"] = bool(np.isfinite(eh)
                                                   and abs(eh - rows[i]["e_above_hull"]) > DISAGREEMENT_THRESHOLD)
        if rows[i].get("suspect") and np.isfinite(eh):
            rows[i]["suspect_reason"] = (
                f"{potential} agrees ({eh:+.3f} eV/atom): a missing reference phase is more likely than a potential "
                "failure" if eh < -SUSPECT_THRESHOLD else
                f"potential failure likely: {potential} puts it at {eh:+.3f} eV/atom")
    checked = [i for i in picked if f"e_above_hull_{potential}" in rows[i]]
    meta["second_opinion"] = {
        "potential": f"{potential} ({SEVENNET_VARIANT})", "n_checked": len(checked),
        "n_disagree": int(sum(bool(rows[i].get("second_opinion_disagrees")) for i in checked)),
        "disagreement_threshold": DISAGREEMENT_THRESHOLD,
        "n_sun_confirmed": int(sum(bool(rows[i].get("sun")) and not rows[i].get("second_opinion_disagrees")
                                   and rows[i][f"e_above_hull_{potential}"] <= STABILITY_THRESHOLD for i in checked)),
        "seconds_per_candidate": float(np.mean(seconds)) if seconds else None,
        "cpu_seconds_per_candidate": float(np.nanmean(cpu)) if cpu and np.isfinite(cpu).any() else None,
        "what": "the S.U.N. crystals and the suspects, relaxed again from their relaxed cells (stored results reused)"}


# ============================================================================================== 6
def properties_stage(rows, final, valid, settings: EvaluationSettings, extras: dict) -> None:
    """6a. space group, HHI, density and (``band_gap``) the predicted band gap of each valid structure."""
    for i, s in enumerate(final):
        if s is None or not valid[i]:
            continue
        num, sym = spacegroup(s)
        hp, hr = hhi(s.composition)
        rows[i].update(spacegroup=num, spacegroup_symbol=sym, hhi_production=hp, hhi_reserve=hr,
                       density=safe(lambda: float(s.density)))
    if not settings.band_gap:
        return
    try:
        pred = band_gap_predictor()
        idx = [i for i in range(len(final)) if final[i] is not None and valid[i]]
        vals = pred.predict([final[i].composition for i in idx])
        for i, v in zip(idx, vals):
            rows[i]["band_gap_pred"] = float(v)
        extras["band_gap_model_test_mae"] = pred.metrics.get("test_mae_eV")
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"band-gap prediction skipped: {exc}")


def distribution_stage(final, valid, ref_structs, ref_name, settings: EvaluationSettings, extras: dict,
                       ref_stats: dict) -> None:
    """6b. coverage and Wasserstein distances against the reference."""
    try:
        with fan_out(settings) as map_fn:   # the relaxations' cluster or map also computes the fingerprints
            gen = [s if (s is not None and v) else None for s, v in zip(final, valid)]
            ref = reference_fingerprints(ref_structs, ref_name, max_n=settings.max_reference_fingerprints,
                                         progress=settings.progress)
            sf, cf = fingerprints(gen, progress=settings.progress, desc="fingerprints", map_fn=map_fn)
        cov = coverage(sf, cf, ref["struct"], ref["comp"])
        extras.update(cov_recall=cov["cov_recall"], cov_precision=cov["cov_precision"],
                      n_reference_fingerprints=cov["n_ref"])
        extras.update(wasserstein_metrics([g for g in gen if g is not None], ref["structures_meta"]))
        ref_stats.update(ref["structures_meta"])
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"distribution metrics skipped: {exc}")


def reference_spacegroups(reference):
    """Space-group numbers of a bundled reference split (for the space-group figure), else None."""
    if isinstance(reference, str):
        p = safe(lambda: bundled(reference.split("-", 1)[1]).properties)
        if p is not None and "spacegroup" in p:
            return p["spacegroup"].dropna().astype(int).to_numpy()
    return None
