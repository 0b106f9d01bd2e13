"""Generate crystals with a trained model: ``load_model()`` and ``generate()``.

>>> import mattergen_kit as mk
>>> model = mk.load_model()                      # the bundled model shipped in the package
>>> structures = model.generate(8, seed=0, steps=100)   # pymatgen Structures
>>> structures = mk.generate(8, seed=0)          # same, with the bundled model and its default steps

The pipeline reads like the paper: draw N from the number-of-atoms prior of the training set, start
from the prior of the three processes (all types masked, uniform coordinates, the N-dependent cubic
lattice) and run the predictor-corrector sampler back to t = 0 (mattergen_reference.md §6).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from mattergen_kit.data import CrystalBatch
from mattergen_kit.diffusion import CrystalDiffusion
from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint
from mattergen_kit.model.checkpoint import load_model as load_denoiser_and_diffusion
from mattergen_kit.outputs import generate_to_folder, write_samples  # noqa: F401  (public here too)
from mattergen_kit.sampling import NonFiniteSampleError, NumAtomsPrior, PredictorCorrectorSampler
from mattergen_kit.sampling.request import (DEFAULT_GUIDANCE_SCALE, DEFAULT_THREADS,  # noqa: F401 (public here too)
                                            ResolvedRequest, SamplingRequest, beyond_training,
                                            check_allowed_elements, device_problem, formula_atom_types,
                                            symmetry_templates)
from mattergen_kit.sampling.trajectory import DenoisingTrajectory

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "mp_bundled_20.npz"
#: the bundled model fine-tuned with property conditioning (configs/conditioned_cpu.yaml); used when conditions are given
BUNDLED_CONDITIONED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "mp_bundled_20_conditioned.npz"
# DEFAULT_THREADS (sampling/request.py): torch CPU threads for sampling unless told otherwise (CLI --threads, Python
# threads=). Measured on the 2-core box with the other core busy: `generate --num 8 --steps 100` sampled in
# 10.6-12.5 s with 1 thread and 216-291 s with 2 (README "Speed notes"); one thread is never the slow case.


#: loaders of model formats that live on higher floors and register here: (accepts(path) -> bool, load(path, device)).
#: mattergen_kit.mattergen_models adds MatterGen's released models (a name such as "mattergen_base" or a folder with
#: config.yaml) when it is imported — mk.load_model / mk.generate and the CLI import it.
EXTERNAL_LOADERS: list = []


@dataclass
class GenerativeModel:
    """A denoiser with its diffusion processes and number-of-atoms prior, ready to sample."""

    denoiser: torch.nn.Module
    diffusion: CrystalDiffusion
    num_atoms_prior: NumAtomsPrior
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def property_specs(self) -> dict:
        """{name: PropertySpec} of the properties this model can be conditioned on ({} for a base model)."""
        adapter = getattr(self.denoiser, "adapter", None)
        return dict(adapter.specs) if adapter is not None else {}

    def check_conditions(self, conditions, guidance_scale: float | None, allowed_elements, num: int):
        """(checked conditions or None, allowed elements): the request's checks of conditions, γ and elements,
        without sampling (``ValueError`` naming what is wrong; see :class:`SamplingRequest`)."""
        resolved = SamplingRequest(num, seed=0, steps=2, conditions=conditions, guidance_scale=guidance_scale,
                                   allowed_elements=allowed_elements, num_atoms=1).resolve(self)
        return resolved.conditions, resolved.allowed_elements

    def resolve(self, request: SamplingRequest | int, **kwargs) -> ResolvedRequest:
        """``request`` (or ``num`` and keyword arguments) checked against this model, defaults filled in."""
        return SamplingRequest.from_kwargs(request, **kwargs).resolve(self)

    def sample(self, num: SamplingRequest | int, **kwargs):
        """Sample ``num`` crystals as one CPU :class:`CrystalBatch` (keywords: :class:`SamplingRequest`; see
        :meth:`generate`).

        ``return_trajectory=True`` returns ``(batch, trajectory)``: a
        :class:`~mattergen_kit.sampling.trajectory.DenoisingTrajectory` of every ``trajectory_every``-th step
        (default 10; the samples are the same as without it).

        >>> batch, traj = model.sample(2, seed=0, steps=20, return_trajectory=True, trajectory_every=5)  # doctest: +SKIP
        >>> traj.steps                                                                                 # doctest: +SKIP
        [0, 5, 10, 15, 20]
        """
        return_trajectory = kwargs.pop("return_trajectory", False)
        request = SamplingRequest.from_kwargs(num, **kwargs)
        every = (request.trajectory_every or 10) if return_trajectory else None
        parts = list(self.iter_batches(replace(request, trajectory_every=every)))
        batch = CrystalBatch.collate([part.batch for part in parts])
        if not return_trajectory:
            return batch
        return batch, DenoisingTrajectory.concatenate([part.trajectory for part in parts])

    def iter_batches(self, num: SamplingRequest | int, *, skip=(), step_callback=None, **kwargs):
        """Yield a :class:`SampledBatch` ``(start, batch, trajectory)`` for each batch of ``batch_size`` crystals
        as soon as it is sampled (``trajectory`` is None unless ``trajectory_every=k``: every k-th step recorded;
        same samples).

        ``num``: a :class:`SamplingRequest`, or the number of crystals with the request's fields as keywords.
        The request is checked once, before the first batch. ``skip``: batch starts not to sample (already
        written by an interrupted run); the other batches are the same as in a run that skipped none.
        ``step_callback(step, num_steps)`` is called after every sampler step; an exception it raises stops
        sampling. ``enforce_symmetry=True`` (with a ``space_group`` condition): each crystal draws a Wyckoff
        template of its space group from the bundled train split (which also fixes its number of atoms), and the
        sampler keeps the crystal exactly in that space group (:mod:`mattergen_kit.sampling.symmetry`). ``threads``:
        torch CPU threads while a batch samples (restored afterwards; None keeps torch's setting).
        """
        resolved = num if isinstance(num, ResolvedRequest) else self.resolve(num, **kwargs)
        sampler = PredictorCorrectorSampler(self.diffusion, num_steps=resolved.steps, **resolved.sampler_options)
        threads = resolved.request.threads
        skip = set(skip)
        before = torch.get_num_threads()
        for start in resolved.starts():
            if start in skip:
                continue
            kw = resolved.batch_kwargs(start)
            num_atoms = kw.pop("num_atoms")
            if threads is not None:
                torch.set_num_threads(int(threads))  # only while a batch samples; the caller's setting holds between
            try:
                batch = sampler.sample(self.denoiser, num_atoms, **kw, step_callback=step_callback)
            except NonFiniteSampleError as err:
                hint = beyond_training(self, resolved)
                if hint:  # say what was asked that the model cannot do, not "untrained or diverged"
                    err.args = (f"{err.args[0].split(' The model')[0]} This request asked for {hint}: that is beyond "
                                "what the model was trained on and the likely cause (the checkpoint is fine).",)
                raise
            finally:
                torch.set_num_threads(before)
            trajectory = sampler.last_trajectory if resolved.request.trajectory_every is not None else None
            yield SampledBatch(start, batch, trajectory)

    def generate(self, num: SamplingRequest | int, **kwargs) -> list:
        """Generate ``num`` crystals and return them as pymatgen ``Structure`` objects.

        Keywords (fields of :class:`~mattergen_kit.sampling.request.SamplingRequest`): ``seed`` (same seed and
        batch_size give the same crystals), ``steps`` (predictor-corrector steps, each two network calls; default
        the model's recommended number; 1000 is MatterGen's reference), ``batch_size``, ``num_atoms`` (one N for all,
        or one per crystal), ``conditions`` ({property: value}, e.g. {"band_gap": 3.0, "space_group": 225,
        "chemical_system": "Li-Fe-P-O"}, for a model trained on them; a chemical system also restricts the
        elements), ``guidance_scale`` (γ; default 2.0 when conditions are given, 0 without; γ = 0 with conditions
        samples the unconditional model and warns), ``allowed_elements`` (symbols or Z), ``formula`` (e.g.
        "Li4Fe4P4O16": every crystal has exactly these atoms, as written), ``fixed_atom_types`` (CSP: one list of
        elements per crystal), ``enforce_symmetry``, ``progress``, ``coherence_bias`` (β(t) toward the elements a
        cell already holds: default the model's fitted one, False = off), ``type_temperature`` (τ of the atom-type
        reveals; default the model's recommended value, 1.0 = MatterGen's sampler), ``remask_rate``, ``threads``,
        ``return_trajectory=True`` (returns ``(structures, DenoisingTrajectory)``, see :meth:`sample`) with
        ``trajectory_every`` (record every k-th step, default 10).
        """
        out = self.sample(num, **kwargs)
        if kwargs.get("return_trajectory"):
            return out[0].to_structures(), out[1]
        return out.to_structures()


class SampledBatch(NamedTuple):
    """One finished batch of :meth:`GenerativeModel.iter_batches`: crystals ``start ... start + len - 1``."""

    start: int
    batch: CrystalBatch
    trajectory: DenoisingTrajectory | None = None


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> GenerativeModel:
    """Load the bundled model (``path=None``) or a checkpoint written by ``mattergen-kit train``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (a ``ValueError``) for a
    corrupted file, a foreign file or a checkpoint of an unsupported format version.
    A path a registered loader accepts (``EXTERNAL_LOADERS``: MatterGen's released models) is loaded by it.
    """
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_model takes a checkpoint path (or None for the bundled model), got {path!r}")
    problem = device_problem(device)
    if problem:
        raise ValueError(problem)
    for accepts, load in EXTERNAL_LOADERS:
        if path is not None and accepts(path):
            return load(path, device=device)
    path = Path(path) if path is not None else BUNDLED_CHECKPOINT
    if path == BUNDLED_CONDITIONED_CHECKPOINT and not path.is_file():
        raise FileNotFoundError(f"the conditioned bundled model {path.name} has not been built yet, so conditions can only "
                                "be used with a model you pass (model=/--model: a checkpoint from mattergen_kit.finetune "
                                "or `mattergen-kit train --config configs/conditioned_cpu.yaml`)")
    if path == BUNDLED_CHECKPOINT and not path.is_file():
        raise FileNotFoundError(f"the bundled model {path} is missing from this install; reinstall mattergen_kit "
                                "or pass the path of a checkpoint written by `mattergen-kit train`")
    ckpt = load_checkpoint(path)
    denoiser, diffusion, ckpt = load_denoiser_and_diffusion(ckpt, device=device)
    probs = ckpt["meta"].get("num_atoms_histogram")
    if probs is None:
        raise CheckpointError(f"{path} has no number-of-atoms prior (meta['num_atoms_histogram']); re-export it with "
                              "mattergen_kit.training.export_lightning_checkpoint")
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 1 or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise CheckpointError(f"{path} has an invalid number-of-atoms prior (meta['num_atoms_histogram'] must be "
                              "finite, non-negative and not all zero); re-export the checkpoint")
    return GenerativeModel(denoiser, diffusion, NumAtomsPrior(probs), dict(ckpt["meta"]), path)


def generate(num: SamplingRequest | int, model: GenerativeModel | str | Path | None = None, **kwargs) -> list:
    """Generate ``num`` crystals (pymatgen ``Structure`` list) with the bundled model or ``model``.

    Without ``model``, a request with conditions uses the conditioned bundled model (the base model has none).
    Keywords: the fields of :class:`SamplingRequest` (see :meth:`GenerativeModel.generate`).

    >>> import mattergen_kit as mk
    >>> crystals = mk.generate(4, seed=0, steps=50)
    >>> len(crystals)
    4
    """
    request = SamplingRequest.from_kwargs(num, **{k: v for k, v in kwargs.items()
                                                  if k not in ("return_trajectory",)})
    if not isinstance(model, GenerativeModel):
        model = load_model(model if model is not None else default_checkpoint(request))
    return model.generate(request, **{k: v for k, v in kwargs.items() if k == "return_trajectory"})


def default_checkpoint(request: SamplingRequest) -> Path:
    """The bundled model a request needs: the conditioned one when it has conditions or γ > 0, else the base."""
    return BUNDLED_CONDITIONED_CHECKPOINT if (request.conditions or request.guidance_scale) else BUNDLED_CHECKPOINT
