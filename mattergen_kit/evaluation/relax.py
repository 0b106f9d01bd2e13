"""Relaxation of structures with a machine-learned potential (CHGNet by default; SevenNet optional),
with a progress bar, a per-structure results file that is appended as it goes, resumption after an
interrupt, and a pluggable ``map_fn`` for parallel engines.

* **Relaxation**: CHGNet ``StructOptimizer`` (FIRE, positions + cell through ASE's FrechetCellFilter),
  stopping when every force ≤ ``fmax`` (default 0.1 eV/Å) or after ``steps`` steps (default 300). With
  ``batch_size > 1`` (what :func:`~mattergen_kit.evaluation.evaluate` uses for CHGNet by default) the same FIRE runs
  per structure while CHGNet evaluates all of them in one batched call per step (:mod:`.relax_batched`, ~3× the
  throughput on one core, the same relaxed energies).
* **RMSD** generated → relaxed, in Å (MatterGen's ``compute_rmsd_angstrom``, ref §11.2):
  ``StructureMatcher(ltol=0.5, stol=0.5, angle_tol=10, primitive_cell=True, scale=False,
  attempt_supercell=True)``'s normalised rms ``r̂`` is converted back to Å with the mean volume per atom,
  ``rmsd = r̂ · ((V_gen + V_rel) / 2 / N)^{1/3}``; if the matcher finds no match, ``r̂ = 0.5`` (MatterGen's
  convention, flagged by ``rmsd_matched = False``).
* **Resume**: each result is one JSON line in ``store`` keyed by a hash of the input structure and the
  relaxation settings; a re-run skips keys already there (a half-written last line is ignored).
* **Threads**: a small crystal's relaxation is dominated by tiny linear algebra (the cell filter's 3×3 matrix
  exponentials) and a small graph network; on a shared CPU, multi-threaded BLAS / torch spin and slow it down by
  10–50× (measured: 40 FIRE steps of a 10-atom cell took 1.3 s with one thread, 55 s with two on a busy 2-core
  machine). So each relaxation runs with BLAS limited to one thread and ``torch_threads`` (default 1) torch
  threads on CPU; use ``map_fn`` with several processes to use more cores.
* **map_fn**: ``map_fn(func, items) -> iterable of results`` (default: the built-in lazy ``map``, i.e. a plain
  loop). ``func`` is a picklable module-level function, so e.g. ``map_fn=lambda f, xs: client.map(f, list(xs))``
  + ``client.gather`` (Dask), ``pool.imap_unordered`` (multiprocessing) or ``lambda f, xs:
  ray.get([ray.remote(f).remote(x) for x in xs])`` all work; results may come back in any order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pymatgen.core import Structure
from tqdm.auto import tqdm

from mattergen_kit.evaluation import chgnet_fast
from mattergen_kit.evaluation.potentials import (CHGNET_MAX_Z, SEVENNET_VARIANT, _threads, empty_result,  # noqa: F401
                                                 keep_freed_memory, limit_threads, load_potential, rmsd_angstrom)
from mattergen_kit.evaluation.relax_batched import relax_batched, relax_chunk

__all__ = ["RelaxSettings", "relax_structures", "relax_one", "rmsd_angstrom", "ResultStore", "structure_key",
           "load_potential", "chunk_size"]


class RelaxSettings(dict):
    """Plain-dict settings (picklable): model, device, fmax, steps, relax_cell."""

    def __init__(self, model: str = "chgnet", device: str | None = None, fmax: float = 0.1, steps: int = 300,
                 relax_cell: bool = True, torch_threads: int | None = 1):
        super().__init__(model=model, device=device, fmax=float(fmax), steps=int(steps), relax_cell=bool(relax_cell),
                         torch_threads=torch_threads)


def structure_key(structure, settings: dict) -> str:
    """Stable hash of a structure (lattice, species, fractional coordinates rounded to 1e-6) + settings."""
    lat = np.round(np.asarray(structure.lattice.matrix, float), 6).tolist()
    fc = np.round(np.asarray(structure.frac_coords, float), 6).tolist()
    sp = [str(s.specie) for s in structure]
    settings_part = {k: settings[k] for k in ("model", "fmax", "steps", "relax_cell")}
    blob = json.dumps([lat, sp, fc, settings_part], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def _relax_ase(calc, structure, fmax, steps, relax_cell):
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calc
    obj = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = FIRE(obj, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    forces = atoms.get_forces()
    return (AseAtomsAdaptor.get_structure(atoms), float(atoms.get_potential_energy()), int(opt.nsteps),
            float(np.linalg.norm(forces, axis=1).max()))


def relax_one(item, settings: dict | None = None) -> dict:
    """Relax one structure. ``item = (index, key, structure_dict)``; returns a JSON-able result dict
    (never raises: failures come back with ``ok=False`` and ``error``)."""
    keep_freed_memory()

    settings = dict(settings or RelaxSettings())
    index, key, sdict = item
    out = empty_result(index, key)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        s = Structure.from_dict(sdict)
        if settings["model"] == "chgnet":
            beyond = sorted({el.symbol for el in s.composition.elements if el.Z > CHGNET_MAX_Z})
            if beyond:
                raise ValueError(f"CHGNet covers elements with Z <= {CHGNET_MAX_Z} (up to Pu); "
                                 f"{', '.join(beyond)} cannot be relaxed with it")
        pot = load_potential(settings["model"], settings.get("device"))
        with warnings.catch_warnings(), _threads(settings.get("torch_threads", 1)):
            warnings.simplefilter("ignore")
            if settings["model"] == "chgnet":
                chgnet_fast.uninstall(pot.calculator.model)   # the one-at-a-time path is CHGNet's own code throughout
                res = pot.relax(s, fmax=settings["fmax"], steps=settings["steps"], relax_cell=settings["relax_cell"],
                                verbose=False)
                relaxed = res["final_structure"]
                traj = res["trajectory"]
                energy = float(traj.energies[-1])
                n_steps = len(traj.energies)
                fmax_found = float(np.linalg.norm(np.asarray(traj.forces[-1]), axis=1).max())
            else:
                relaxed, energy, n_steps, fmax_found = _relax_ase(pot, s, settings["fmax"], settings["steps"],
                                                                  settings["relax_cell"])
        if not np.isfinite(energy):
            raise FloatingPointError("non-finite energy")
        relaxed.remove_site_property("magmom") if "magmom" in relaxed.site_properties else None
        with _threads(None):
            rmsd, matched = rmsd_angstrom(s, relaxed)
        out.update(ok=True, energy=energy, energy_per_atom=energy / len(relaxed), n_steps=n_steps,
                   max_force=fmax_found, converged=bool(fmax_found <= settings["fmax"] + 1e-9),
                   relaxed=relaxed.as_dict(), rmsd=rmsd, rmsd_matched=matched)
    except Exception as exc:  # noqa: BLE001 - per-structure failures are data, not crashes
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # this process's CPU time: fairer than wall time on a shared CPU
    return out


# ------------------------------------------------------------------------------------------------ results file
class ResultStore:
    """Append-only JSON-lines file of per-structure results keyed by ``key`` (see module docstring)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.results: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        """Load every complete record; a torn last line (an interrupted write) is cut off the file, so the
        next record starts on a line of its own. Unreadable complete lines are counted in a warning."""
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
            warnings.warn(f"{self.path}: removed a torn last record ({len(data) - end} bytes) left by an "
                          "interrupted run; it will be recomputed")
        bad = 0
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                self.results[r["key"]] = r
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            warnings.warn(f"{self.path}: ignored {bad} unreadable line(s); those structures will be recomputed")

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def add(self, result: dict) -> None:
        self.results[result["key"]] = result
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(result) + "\n")
                f.flush()


def chunk_size(n: int, batch_size: int, min_chunks: int = 8, min_size: int = 8) -> int:
    """Structures per task when ``n`` batched relaxations are spread by a ``map_fn``: ``batch_size``, but small enough
    that there are ``min_chunks`` tasks for the workers to share, and not below ``min_size`` (a batch of 8 already
    runs at the throughput of 32 on one core; smaller batches pay the per-step overhead more often).

        size = min(batch_size, max(min_size, ⌈n / min_chunks⌉))     (n = 1000, B = 32: 32;  n = 100: 13;  n = 16: 8)
    """
    return max(1, min(batch_size, max(min_size, -(-n // min_chunks))))


def relax_structures(structures: Sequence, settings: dict | None = None, store: str | os.PathLike | None = None,
                     map_fn: Callable | None = None, progress: bool = True, skip: Sequence[bool] | None = None,
                     callback: Callable[[int, dict], None] | None = None, batch_size: int = 1) -> list[dict | None]:
    """Relax ``structures`` (None entries and ``skip[i]`` are not relaxed); returns one result dict per input
    (None where skipped). Results found in ``store`` are reused; new ones are appended to it one by one.
    ``callback(n_done_this_run, result)`` runs after each new result (e.g. to stop a run in a test).

    ``batch_size > 1`` (CHGNet): relax that many at once with one batched potential call per FIRE step
    (:mod:`.relax_batched`); with a ``map_fn`` each task then relaxes a chunk of at most ``batch_size`` structures
    (:func:`chunk_size`: small runs are split into at least 8 chunks, so that every worker gets some).
    The batch size is not part of the result key: the optimizer is the same, so stored results are reused."""
    settings = dict(settings or RelaxSettings())
    rs = ResultStore(store)
    keys: list[str | None] = []
    todo = []
    queued: set[str] = set()
    for i, s in enumerate(structures):
        if s is None or (skip is not None and skip[i]):
            keys.append(None)
            continue
        try:
            k = structure_key(s, settings)
        except Exception:
            keys.append(None)
            continue
        keys.append(k)
        if k not in rs and k not in queued:  # identical inputs are relaxed once
            queued.add(k)
            todo.append((i, k, s.as_dict()))
    if batch_size > 1 and settings["model"] != "chgnet":
        raise ValueError(f"batch_size > 1 is implemented for CHGNet, not {settings['model']!r}: use batch_size=1")
    if batch_size > 1:
        if map_fn is None:
            stream = relax_batched(todo, settings, batch_size)
        else:
            size = chunk_size(len(todo), batch_size)
            chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
            stream = (r for rs_ in map_fn(partial(relax_chunk, settings=settings), chunks) for r in rs_)
    else:
        stream = (map_fn or map)(partial(relax_one, settings=settings), todo)
    bar = tqdm(total=len(todo), desc=f"relaxing ({settings['model']})", disable=not progress or not todo)
    n = 0
    try:
        for r in stream:
            rs.add(r)
            n += 1
            bar.update(1)
            if callback is not None:
                callback(n, r)
    finally:
        bar.close()
    return [rs.results.get(k) if k is not None else None for k in keys]
