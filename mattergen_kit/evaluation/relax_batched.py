"""Batched relaxation: many structures relaxed at once, one batched CHGNet call per FIRE step.

What is shared and what is not
------------------------------
Every structure keeps **its own** ASE optimizer — ``FIRE`` on a ``FrechetCellFilter``, with ASE's default
parameters, exactly what CHGNet's ``StructOptimizer.relax`` runs in the one-at-a-time path
(:func:`~mattergen_kit.evaluation.relax.relax_one`). Only the potential is shared: at every step the graphs of all
active structures go through CHGNet as one batch (:func:`predict_efs`), each result is
stored in its structure's calculator, and then each optimizer takes its own step. A structure's trajectory is
therefore the one it has alone, up to the float round-off of a batched vs. a single graph evaluation
(``tests/test_evaluation_scale.py`` checks the relaxed energies agree).

The loop is ASE's ``Optimizer.irun``: ``evaluate → converged? → step → evaluate → ...`` with at most ``steps``
steps; converged means every component of the filter's generalised forces (atoms and cell) has norm < ``fmax``.
``n_steps`` is reported as ``steps taken + 2``, the length of CHGNet's trajectory observer (initial state, one
entry per step, final state), as in :func:`relax_one`.

Cost (cProfile of 32 generated crystals × 40 FIRE steps, 1 thread). CHGNet's own ``predict_graph`` takes forces
and stresses with two ``create_graph=True`` backward passes (it is the training path): 80 % of a step was the
potential, 63 % its backward passes. :func:`predict_efs` takes both in one plain backward pass (2.1× faster
potential), and the filter's forces, which ASE's loop computes twice per step, are computed once: together 1.82×
(``benchmarks/bench_relax_batched.py``, B = 32, the previous path in the same process). Then, per step of those 32
crystals, 48.4 s → 32.0 s (1.51×):

* the Fréchet cell filter's 3×3 ``logm`` / ``expm`` / ``expm_frechet`` by eigendecomposition instead of SciPy's
  general algorithms (:mod:`.cell_matrix`; 14 % of a step before), and CHGNet's weights frozen (no backward edges
  recorded for them): 38.5 s;
* CHGNet's gated MLPs with their first matrix product applied before the gathers (:mod:`.chgnet_fast`, the same
  function up to float32 round-off; the potential 1.25× faster): 32.0 s.

What is left is CHGNet's forward and backward (~75 %: SiLU and its derivative, scatter-adds and gathers, the
remaining matrix products), graph construction (~12 %; rebuilding only when the neighbour list changes was tried:
only 21 % of the steps kept it, 2 % saved, not kept) and ASE's FIRE and filter (~5 %). Running the matrix products
in bfloat16 (AMX) while forces are large was tried too: no faster end to end, and fewer relaxations converged.

Continuous batching: up to ``batch_size`` relaxations are in flight; when one finishes (converged, or ``steps``
reached, or failed) its result is yielded at once — :func:`relax_structures` appends it to ``relaxed.jsonl`` — and the
next structure from the queue takes its place. A structure's ``seconds`` is the wall time it was in flight (shared
with the others in its batch).

Why not torch-sim
-----------------
``torch-sim-atomistic`` 0.3.0 (batched FIRE / optimisers over MLIPs; its wheel installs next to torch 2.13) ships
model wrappers for MACE, FairChem, MatterSim, SevenNet, ORB, GraphPES and metatomic, but **not CHGNet**, our default
potential, and its FIRE and cell filter are its own, so relaxed structures would differ from the ones already in
``relaxed.jsonl`` files and calibrations. Batching the potential under ASE's optimizer keeps both.
"""

from __future__ import annotations

import time
import warnings
from typing import Iterable, Iterator

import numpy as np
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from mattergen_kit.evaluation import cell_matrix, chgnet_fast
from mattergen_kit.evaluation.potentials import (CHGNET_MAX_Z, empty_result, keep_freed_memory, limit_threads,
                                                 load_potential, rmsd_angstrom)

__all__ = ["relax_batched", "relax_chunk"]


class _Job:
    """One relaxation in flight: its ASE atoms, filter, optimizer and the bookkeeping of ``relax_one``."""

    def __init__(self, item, settings: dict, calculator, reuse_gradient: bool = True):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        index, key, sdict = item
        self.out = empty_result(index, key)
        self.error = ""
        self.nsteps = 0
        self.structure = Structure.from_dict(sdict)
        beyond = sorted({el.symbol for el in self.structure.composition.elements if el.Z > CHGNET_MAX_Z})
        if beyond:
            raise ValueError(f"CHGNet covers elements with Z <= {CHGNET_MAX_Z} (up to Pu); "
                             f"{', '.join(beyond)} cannot be relaxed with it")
        self.atoms = AseAtomsAdaptor.get_atoms(self.structure)
        self.atoms.calc = _Prefilled(calculator)
        self.target = FrechetCellFilter(self.atoms) if settings["relax_cell"] else self.atoms
        if settings["relax_cell"] and reuse_gradient:
            cell_matrix.install(self.target)         # 3×3 log/exp by eigendecomposition, not SciPy's general ones
        self.opt = FIRE(self.target, logfile=None)
        self.opt.fmax = settings["fmax"]
        # ASE's loop evaluates the filter's generalised forces twice per step (the convergence test, then FIRE's
        # step), each with a matrix logarithm and exponential of the cell deformation; the state does not change in
        # between, so the step reuses the test's value (one-shot cache, same numbers, same trajectory)
        self._gradient = None                        # the convergence test's value, until the step takes it
        self.reuse_gradient = reuse_gradient
        if reuse_gradient:
            optimizable = self.opt.optimizable
            compute = optimizable.get_gradient

            def gradient_once():
                g, self._gradient = self._gradient, None
                return compute() if g is None else g

            optimizable.get_gradient = gradient_once

    def store(self, prediction: dict, model, stress_weight: float) -> None:
        """Put one CHGNet prediction (``e`` per atom, ``f``, ``s`` in GPa) into this job's calculator, as
        ``CHGNetCalculator.calculate`` converts it (energy extensive, stress in eV/Å³)."""
        n = len(self.atoms) if model.is_intensive else 1
        e = float(prediction["e"]) * n
        calc = self.atoms.calc
        calc.atoms = self.atoms.copy()
        calc.results = {"energy": e, "free_energy": e, "forces": np.asarray(prediction["f"], float),
                        "stress": np.asarray(prediction["s"], float) * stress_weight}

    def finished(self, steps: int) -> bool:
        """ASE ``irun``'s stop test at the current (evaluated) state (its gradient kept for the step that follows)."""
        self._gradient = None                        # evaluate this state afresh
        gradient = self.opt.optimizable.get_gradient()
        if self.reuse_gradient:
            self._gradient = gradient
        return bool(self.opt.gradient_converged(gradient)) or self.nsteps >= steps

    def result(self, settings: dict) -> dict:
        """The ``relax_one`` result dict of this job (never raises)."""
        out = self.out
        try:
            if self.error:
                raise RuntimeError(self.error)
            energy = float(self.atoms.get_potential_energy())
            if not np.isfinite(energy):
                raise FloatingPointError("non-finite energy")
            fmax_found = float(np.linalg.norm(self.atoms.get_forces(), axis=1).max())
            relaxed = AseAtomsAdaptor.get_structure(self.atoms)
            with limit_threads(None):
                rmsd, matched = rmsd_angstrom(self.structure, relaxed)
            out.update(ok=True, energy=energy, energy_per_atom=energy / len(relaxed), n_steps=self.nsteps + 2,
                       max_force=fmax_found, converged=bool(fmax_found <= settings["fmax"] + 1e-9),
                       relaxed=relaxed.as_dict(), rmsd=rmsd, rmsd_matched=matched)
        except Exception as exc:  # noqa: BLE001 - per-structure failures are data
            out["error"] = f"{type(exc).__name__}: {exc}"[:500]
        out["seconds"] = time.perf_counter() - self.t0
        out["cpu_seconds"] = time.process_time() - self.c0
        return out


def _prefilled_class():
    from ase.calculators.calculator import Calculator, all_changes

    class Prefilled(Calculator):
        """Holds results filled in by the batched evaluation. ASE calls ``calculate`` only if the atoms moved
        since (never in the loop below); then it computes them singly with the CHGNet calculator."""

        implemented_properties = ("energy", "free_energy", "forces", "stress")

        def __init__(self, fallback):
            super().__init__()
            self.fallback = fallback

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.fallback.calculate(atoms, None, system_changes, task="efs")
            self.results = {k: self.fallback.results[k] for k in ("energy", "free_energy", "forces", "stress")}

    return Prefilled


_PREFILLED = None


def _Prefilled(fallback):
    global _PREFILLED
    if _PREFILLED is None:
        _PREFILLED = _prefilled_class()
    return _PREFILLED(fallback)


def predict_efs(model, graphs: list) -> list[dict]:
    """CHGNet energies, forces and stresses of ``graphs`` in one batch, as ``model.predict_graph(graphs, task="efs")``
    gives them (``e`` eV/atom, ``f`` eV/Å, ``s`` GPa, numpy), at about half its cost.

    CHGNet's own path (a training code path) takes the two derivatives with two ``autograd.grad`` calls, each with
    ``create_graph=True``: two double-backward-ready backward passes. A relaxation needs neither, so here one plain
    backward pass gives both,

        E_tot = Σ_b E_b,   f = −∂E_tot/∂r,   σ_b = (1/V_b) ∂E_tot/∂ε_b · 160.21766 GPa/(eV/Å³),

    with ε_b the strain at which CHGNet's batched graph builds crystal b's lattice, L_b (1 + ε_b) at ε_b = 0, and r the
    Cartesian positions computed from it; the energies are the model's (graph part per atom + composition model).
    ``tests/test_evaluation_scale.py`` checks the result against ``predict_graph``."""
    import torch
    from chgnet.model.model import BatchedGraph

    device = next(model.parameters()).device
    graphs = [g.to(device) for g in graphs]
    model.eval()
    comp_energy = 0 if model.composition_model is None else model.composition_model(graphs)
    batch = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                     angle_basis_expansion=model.angle_basis_expansion, compute_stress=True)
    with torch.enable_grad():
        pred = model._compute(batch, compute_force=False, compute_stress=False)
        atoms = pred["atoms_per_graph"]
        energy = pred["e"] * atoms if model.is_intensive else pred["e"]          # extensive graph energies E_b
        grads = torch.autograd.grad(energy.sum(), [*batch.atom_positions, *batch.strains])
    n = len(graphs)
    e = (pred["e"] + comp_energy).detach().cpu().numpy()
    out = []
    for b in range(n):
        stress = grads[n + b] * (160.21766208 / batch.volumes[b])
        out.append({"e": e[b], "f": (-grads[b]).detach().cpu().numpy(), "s": stress.detach().cpu().numpy()})
    return out


def _evaluate(jobs: list[_Job], calculator, one_backward: bool = True) -> None:
    """One batched CHGNet evaluation of every job's current state (a job whose graph or prediction fails gets an
    ``error`` and is finished by the caller). ``one_backward=False``: CHGNet's own ``predict_graph`` (benchmarks)."""
    model = calculator.model
    graphs, ok = [], []
    for job in jobs:
        try:
            graphs.append(model.graph_converter(AseAtomsAdaptor.get_structure(job.atoms)).to(calculator.device))
            ok.append(job)
        except Exception as exc:  # noqa: BLE001
            job.error = f"{type(exc).__name__}: {exc}"
    if not graphs:
        return
    try:
        if one_backward:
            preds = predict_efs(model, graphs)
        else:
            preds = model.predict_graph(graphs, task="efs", batch_size=len(graphs))
            preds = [preds] if len(graphs) == 1 else preds
    except Exception:  # noqa: BLE001 - find the culprit: evaluate one at a time
        preds = []
        for g, job in zip(graphs, ok):
            try:
                preds.append(model.predict_graph(g, task="efs"))
            except Exception as exc:  # noqa: BLE001
                job.error = f"{type(exc).__name__}: {exc}"
                preds.append(None)
    for job, p in zip(ok, preds):
        if p is not None:
            job.store(p, model, calculator.stress_weight)


def relax_batched(items: Iterable, settings: dict, batch_size: int = 32, reference_path: bool = False) -> Iterator[dict]:
    """Relax ``items`` (``(index, key, structure_dict)`` as for ``relax_one``) ``batch_size`` at a time; yields one
    ``relax_one``-style result per item as soon as it is finished (module docstring). CHGNet only.
    ``reference_path=True`` runs it as this module was first written — the potential through CHGNet's
    ``predict_graph`` instead of :func:`predict_efs`, the filter's forces evaluated twice per step by SciPy, CHGNet's
    own layers — the same numbers up to float round-off at ~2.7× the cost (kept for benchmarks/bench_relax_batched.py)."""

    keep_freed_memory()   # Dask workers would otherwise unmap and re-zero every large tensor at every step
    if settings["model"] != "chgnet":
        raise ValueError(f"batched relaxation is implemented for CHGNet, not {settings['model']!r}: use batch_size=1")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    calculator = load_potential("chgnet", settings.get("device")).calculator

    if reference_path:
        chgnet_fast.uninstall(calculator.model)
    else:
        # forces and stresses need gradients with respect to positions and strains only; weights that require grad
        # would make every forward pass record their backward edges as well
        calculator.model.requires_grad_(False)
        chgnet_fast.install(calculator.model)   # first layers before the gathers: same function, 1.25x faster potential
    queue = iter(items)
    active: list[_Job] = []
    with warnings.catch_warnings(), limit_threads(settings.get("torch_threads", 1)):
        warnings.simplefilter("ignore")
        exhausted = False
        while True:
            while not exhausted and len(active) < batch_size:
                item = next(queue, None)
                if item is None:
                    exhausted = True
                    break
                try:
                    active.append(_Job(item, settings, calculator, reuse_gradient=not reference_path))
                except Exception as exc:  # noqa: BLE001 - an unusable input is a failed result, not a crash
                    out = empty_result(item[0], item[1])
                    out["error"] = f"{type(exc).__name__}: {exc}"[:500]
                    yield out
            if not active:
                return
            _evaluate(active, calculator, one_backward=not reference_path)
            still = []
            for job in active:
                if job.error or job.finished(settings["steps"]):
                    yield job.result(settings)
                else:
                    job.opt.step()
                    job.nsteps += 1
                    still.append(job)
            active = still


def relax_chunk(items: list, settings: dict, batch_size: int | None = None) -> list[dict]:
    """``relax_batched`` over one chunk, as a list (the unit of work a Dask task or process pool runs)."""
    return list(relax_batched(items, settings, batch_size or len(items)))
