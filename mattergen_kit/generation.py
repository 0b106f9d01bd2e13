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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mattergen_kit.data import CrystalBatch
from mattergen_kit.diffusion import CrystalDiffusion
from mattergen_kit.diffusion.atom_types import ALLOWED_Z
from mattergen_kit.outputs import generate_to_folder, write_samples  # noqa: F401  (public here too)
from mattergen_kit.sampling import NumAtomsPrior, PredictorCorrectorSampler

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "mp_bundled_20.pt"
#: the bundled model fine-tuned with property conditioning (configs/conditioned_cpu.yaml); used when conditions are given
BUNDLED_CONDITIONED_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "mp_bundled_20_conditioned.pt"
DEFAULT_STEPS = 1000  # the reference sampler (2 network calls per step)
#: torch CPU threads for sampling unless told otherwise (CLI --threads, Python threads=). Measured on the
#: 2-core box with the other core busy: `generate --num 8 --steps 100` sampled in 10.6-12.5 s with 1 thread and
#: 216-291 s with 2 (README "Speed notes"); the network is small, so one thread is never the slow case.
DEFAULT_THREADS = 1


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

    def check_conditions(self, conditions, guidance_scale: float, allowed_elements, num: int):
        """(checked conditions or None, allowed_elements) — ``ValueError`` before any sampling for a property the
        model was not trained on, conditions or γ ≠ 0 without conditioning, an out-of-range value, an unknown
        element or γ < 0. A ``chemical_system`` condition also restricts the sampled elements to the system
        (ref §12.2): intersected with ``allowed_elements``; per-crystal systems give a (num, K) class mask."""
        from mattergen_kit.conditioning import check_conditions
        from mattergen_kit.constants import atomic_number
        from mattergen_kit.diffusion.atom_types import allowed_classes_mask

        conditions = check_conditions(conditions, self.property_specs, guidance_scale)
        system = conditions.get("chemical_system")
        if system is None:
            return conditions or None, allowed_elements
        base = set(allowed_elements) if isinstance(allowed_elements, list) else None
        if torch.is_tensor(allowed_elements):
            raise ValueError("give allowed_elements as symbols or atomic numbers together with a chemical_system condition")
        masks = []
        for one in ([system] if isinstance(system, str) else system):
            zs = {atomic_number(e) for e in one.split("-")}
            if base is not None:
                zs &= base
                if not zs:
                    raise ValueError(f"chemical_system {one!r} shares no element with allowed_elements")
            masks.append(allowed_classes_mask(sorted(zs), self.diffusion.atom_types.num_classes))
        if isinstance(system, str):
            return conditions, sorted(int(z) + 1 for z in torch.nonzero(masks[0]).flatten())
        _check_per_crystal("chemical_system", system, num)
        return conditions, torch.stack(masks)

    def sample(self, num: int, seed: int | None = None, steps: int = DEFAULT_STEPS, batch_size: int = 64,
               num_atoms=None, guidance_scale: float = 0.0, conditions: dict[str, Any] | None = None,
               allowed_elements=None, fixed_atom_types=None, progress: bool = True,
               type_temperature: float | None = None, coherence_bias=None, formula: str | None = None,
               threads: int | None = DEFAULT_THREADS, return_trajectory: bool = False, trajectory_every: int = 10,
               remask_rate: float | None = None, enforce_symmetry: bool = False):
        """Sample ``num`` crystals as one CPU :class:`CrystalBatch` (see :meth:`generate`).

        ``return_trajectory=True`` returns ``(batch, trajectory)``: a
        :class:`~mattergen_kit.sampling.trajectory.DenoisingTrajectory` of every ``trajectory_every``-th step
        (the samples are the same as without it).

        >>> batch, traj = model.sample(2, seed=0, steps=20, return_trajectory=True, trajectory_every=5)  # doctest: +SKIP
        >>> traj.steps                                                                                 # doctest: +SKIP
        [0, 5, 10, 15, 20]
        """
        parts = list(self.iter_batches(
            num, seed=seed, steps=steps, batch_size=batch_size, num_atoms=num_atoms, guidance_scale=guidance_scale,
            conditions=conditions, allowed_elements=allowed_elements, fixed_atom_types=fixed_atom_types,
            progress=progress, type_temperature=type_temperature, coherence_bias=coherence_bias, formula=formula,
            threads=threads, remask_rate=remask_rate, enforce_symmetry=enforce_symmetry,
            trajectory_every=trajectory_every if return_trajectory else None))
        batch = CrystalBatch.collate([part[1] for part in parts])
        if not return_trajectory:
            return batch
        from mattergen_kit.sampling.trajectory import DenoisingTrajectory

        return batch, DenoisingTrajectory.concatenate([part[2] for part in parts])

    def iter_batches(self, num: int, seed: int | None = None, steps: int = DEFAULT_STEPS, batch_size: int = 64,
                     num_atoms=None, guidance_scale: float = 0.0, conditions: dict[str, Any] | None = None,
                     allowed_elements=None, fixed_atom_types=None, progress: bool = True, skip=(),
                     type_temperature: float | None = None, coherence_bias=None, formula: str | None = None,
                     threads: int | None = DEFAULT_THREADS, trajectory_every: int | None = None,
                     step_callback=None, remask_rate: float | None = None, enforce_symmetry: bool = False):
        """Yield ``(start, CrystalBatch)`` for each batch of ``batch_size`` crystals as soon as it is sampled.

        ``trajectory_every=k`` yields ``(start, CrystalBatch, DenoisingTrajectory)`` instead (every k-th sampler
        step recorded; same samples). ``step_callback(step, num_steps)`` is called after every sampler step of
        each batch; an exception it raises stops sampling.
        ``enforce_symmetry=True`` (with a ``space_group`` condition): each crystal draws a Wyckoff template of its
        space group from the bundled train split (which also fixes its number of atoms), and the sampler keeps the
        crystal exactly in that space group (:mod:`mattergen_kit.sampling.symmetry`); the elements, the lattice
        lengths and the free coordinates are generated (the cell angles the group leaves free are the template's).

        The arguments are validated before the first batch. ``skip``: batch starts not to sample (already
        written by an interrupted run); the other batches are the same as in a run that skipped none.
        ``threads``: torch CPU threads while sampling (restored afterwards; None keeps torch's setting). The
        default, 1, is never the slow case: see :data:`DEFAULT_THREADS`.
        """
        if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
            raise ValueError(f"threads must be at least 1 (or None), got {threads!r}")
        if num < 1:
            raise ValueError(f"num must be at least 1, got {num}")
        if trajectory_every is not None and (isinstance(trajectory_every, bool) or int(trajectory_every) < 1):
            raise ValueError(f"trajectory_every must be a positive number of steps, got {trajectory_every!r}")
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if seed is not None and (isinstance(seed, bool) or not float(seed).is_integer() or not 0 <= seed < 2**63):
            raise ValueError(f"seed must be an integer with 0 <= seed < 2**63, got {seed!r}")
        allowed_elements = check_allowed_elements(allowed_elements)
        conditions, allowed_elements = self.check_conditions(conditions, guidance_scale, allowed_elements, num)
        if isinstance(num_atoms, int) and not isinstance(num_atoms, bool):  # one N for every crystal
            num_atoms = [num_atoms] * num
        if formula is not None:
            fixed_atom_types = formula_atom_types(formula, num, fixed_atom_types, num_atoms)
        _check_per_crystal("fixed_atom_types", fixed_atom_types, num)
        _check_per_crystal("num_atoms", num_atoms, num)
        generator = torch.Generator().manual_seed(int(seed) if seed is not None else torch.seed() % 2**63)
        # Batches of `batch_size` crystals, each with its own seed derived from the run's seed: the result
        # does not depend on how many batches ran before (and a batch can be recomputed on its own).
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        symmetry = None
        if enforce_symmetry:
            if fixed_atom_types is not None:
                raise ValueError("enforce_symmetry takes the atoms' orbits from a Wyckoff template; it cannot be "
                                 "combined with formula= or fixed_atom_types=")
            symmetry, num_atoms = symmetry_templates(conditions, num, num_atoms, generator, allowed_elements)
        if num_atoms is None and fixed_atom_types is None:
            num_atoms = self.num_atoms_prior.sample(num, generator=generator)
        if type_temperature is None:  # the model's measured default (model card), else the reference 1.0
            type_temperature = float(self.meta.get("type_temperature", 1.0))
        if coherence_bias is None:  # the model's fitted β(t) (model card) if it has one; False = the reference sampler
            coherence_bias = self.meta.get("coherence_bias")
        if remask_rate is None:  # the model's measured default (model card), else the reference 0 (never re-mask)
            remask_rate = float(self.meta.get("remask_rate", 0.0))
        sampler = PredictorCorrectorSampler(self.diffusion, num_steps=steps, type_temperature=type_temperature,
                                            coherence_bias=coherence_bias or None, remask_rate=remask_rate)
        skip = set(skip)
        before = torch.get_num_threads()
        for start in range(0, num, batch_size):
            if start in skip:
                continue
            if threads is not None:
                torch.set_num_threads(int(threads))  # only while a batch samples; the caller's setting holds between
            stop = min(num, start + batch_size)
            per_crystal_mask = torch.is_tensor(allowed_elements) and allowed_elements.ndim == 2
            kw = dict(seed=base_seed + start, guidance_scale=guidance_scale,
                      conditions=_condition_rows(conditions, start, stop), progress=progress,
                      allowed_elements=allowed_elements[start:stop] if per_crystal_mask else allowed_elements)
            if fixed_atom_types is not None:
                kw["fixed_atom_types"] = fixed_atom_types[start:stop]
            if symmetry is not None:
                kw["symmetry"] = symmetry.slice(start, stop)
            try:
                batch = sampler.sample(self.denoiser, None if num_atoms is None else num_atoms[start:stop], **kw,
                                       record_every=trajectory_every, step_callback=step_callback)
            finally:
                torch.set_num_threads(before)
            yield (start, batch) if trajectory_every is None else (start, batch, sampler.last_trajectory)

    def generate(self, num: int, seed: int | None = None, steps: int = DEFAULT_STEPS, batch_size: int = 64,
                 **kwargs) -> list:
        """Generate ``num`` crystals and return them as pymatgen ``Structure`` objects.

        seed: same seed (and batch_size) gives the same crystals. steps: predictor-corrector steps (each is
        two network calls); 1000 is MatterGen's reference. Other keywords: ``num_atoms`` (one N for all, or one
        per crystal), ``guidance_scale``, ``conditions``, ``allowed_elements`` (symbols or Z),
        ``conditions`` ({property: value}, e.g. {"band_gap": 3.0, "space_group": 225, "chemical_system": "Li-Fe-P-O"},
        for a model trained on them; checked before sampling; a chemical system also restricts the elements),
        ``formula`` (e.g. "Li4Fe4P4O16": every crystal has exactly these atoms, as written),
        ``fixed_atom_types`` (CSP: one list of elements per crystal), ``progress``, ``coherence_bias``
        (β(t) toward the elements a cell already holds: default the model's fitted one, False = off), ``type_temperature``
        (τ of the atom-type reveals; default: the model's recommended value, 1.0 = MatterGen's sampler),
        ``return_trajectory=True`` (returns ``(structures, DenoisingTrajectory)``, see
        :meth:`sample`) with ``trajectory_every`` (record every k-th step, default 10).
        """
        out = self.sample(num, seed=seed, steps=steps, batch_size=batch_size, **kwargs)
        if kwargs.get("return_trajectory"):
            return out[0].to_structures(), out[1]
        return out.to_structures()


def check_allowed_elements(allowed_elements) -> list[int] | None:
    """The atomic numbers of an ``allowed_elements`` restriction that the model can generate.

    ``None`` means no restriction. A restriction is never dropped: an empty list, an unknown symbol, or a
    list none of whose elements is among MatterGen's 76 generable elements (noble gases, Tc, Pm and Z ≥ 84
    are not) raises ``ValueError``; elements of the list that cannot be generated are named in a warning.
    """
    if allowed_elements is None or torch.is_tensor(allowed_elements):
        return allowed_elements
    from mattergen_kit.constants import ELEMENT_SYMBOLS, atomic_number

    if isinstance(allowed_elements, (str, int)):
        allowed_elements = [allowed_elements]
    zs = []
    for e in allowed_elements:
        try:
            zs.append(atomic_number(e.strip()) if isinstance(e, str) else int(e))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"allowed_elements: {e!r} is not an element symbol or atomic number") from None
        if not 1 <= zs[-1] <= 118:
            raise ValueError(f"allowed_elements: {e!r} is not an atomic number (1-118)")
    if not zs:
        raise ValueError("allowed_elements is empty: give at least one element (or None for no restriction)")
    usable = [z for z in dict.fromkeys(zs) if z in ALLOWED_Z]
    unusable = [ELEMENT_SYMBOLS[z - 1] for z in dict.fromkeys(zs) if z not in ALLOWED_Z]
    if not usable:
        raise ValueError(f"none of the allowed elements ({', '.join(unusable)}) can be generated: the model generates "
                         "only MatterGen's 76 elements (Z 1-83 without noble gases, Tc and Pm)")
    if unusable:
        import warnings

        warnings.warn(f"allowed_elements: {', '.join(unusable)} cannot be generated by this model and will not "
                      "appear; sampling uses the rest", stacklevel=3)
    return usable


def formula_atom_types(formula: str, num: int, fixed_atom_types=None, num_atoms=None) -> list[list[str]]:
    """One list of element symbols per crystal for a fixed formula (crystal-structure prediction: the types
    are given, lattice and coordinates generated). The formula is taken as written: "Li2O" is a 3-atom cell,
    "Li4O2" a 6-atom one."""
    from pymatgen.core import Composition

    if fixed_atom_types is not None:
        raise ValueError("give either formula or fixed_atom_types, not both")
    try:
        comp = Composition(formula)
    except Exception as err:  # pymatgen raises several types for a bad formula
        raise ValueError(f"formula {formula!r} is not a chemical formula ({err})") from None
    if not comp.num_atoms or any(abs(n - round(n)) > 1e-8 for n in comp.values()):
        raise ValueError(f"formula {formula!r} must have whole numbers of atoms")
    check_allowed_elements([el.symbol for el in comp])  # unknown / non-generable elements
    bad = [el.symbol for el in comp if el.Z not in ALLOWED_Z]
    if bad:
        raise ValueError(f"formula {formula!r}: {', '.join(bad)} cannot be generated (MatterGen's 76 elements only)")
    atoms = [el.symbol for el, n in comp.items() for _ in range(int(round(n)))]
    if num_atoms is not None and any(int(n) != len(atoms) for n in num_atoms):
        raise ValueError(f"formula {formula!r} has {len(atoms)} atoms but num_atoms asks for others")
    return [list(atoms) for _ in range(num)]


def symmetry_templates(conditions: dict | None, num: int, num_atoms=None, generator: torch.Generator | None = None,
                       allowed_elements=None):
    """(SymmetryProjector, num_atoms): one Wyckoff template per crystal, drawn uniformly from the bundled train
    crystals of the crystal's ``space_group`` condition (and with its ``num_atoms``, if given). A template needs a
    distinct element per species group, so with an element restriction (``allowed_elements``: atomic numbers, or a
    (K,) / (num, K) class mask, e.g. from a chemical system) only templates with at most that many species are used."""
    from mattergen_kit.sampling.symmetry import SymmetryProjector, templates_for

    value = (conditions or {}).get("space_group")
    if value is None:
        raise ValueError("enforce_symmetry needs a space_group condition, e.g. conditions={'space_group': 225}")
    per_crystal = isinstance(value, (list, tuple)) or (torch.is_tensor(value) and value.ndim > 0)
    groups = [int(v) for v in value] if per_crystal else [int(value)] * num
    if allowed_elements is None:
        max_species = [None] * num
    elif torch.is_tensor(allowed_elements):
        counts = allowed_elements.reshape(-1, allowed_elements.shape[-1]).sum(-1).tolist()
        max_species = [int(c) for c in counts] * (num if len(counts) == 1 else 1)
    else:
        max_species = [len(set(allowed_elements))] * num
    templates = []
    for b, group in enumerate(groups):
        options = templates_for(group)
        if max_species[b] is not None:
            options = [t for t in options if t.num_species <= max_species[b]]
            if not options:
                raise ValueError(f"every Wyckoff template of space group {group} needs more distinct elements than the "
                                 f"{max_species[b]} allowed")
        if num_atoms is not None:
            sizes = sorted({t.num_atoms for t in options})
            options = [t for t in options if t.num_atoms == int(num_atoms[b])]
            if not options:
                raise ValueError(f"no Wyckoff template of space group {group} has {int(num_atoms[b])} atoms in its "
                                 f"primitive cell; the bundled train split has {sizes}")
        templates.append(options[int(torch.randint(len(options), (1,), generator=generator))])
    return SymmetryProjector(templates), [t.num_atoms for t in templates]


def _condition_rows(conditions: dict | None, start: int, stop: int) -> dict | None:
    """Conditions of crystals start:stop: per-crystal values (lists, 1-D tensors) sliced, single values kept."""
    if conditions is None:
        return None
    return {k: v[start:stop] if isinstance(v, (list, tuple)) or (torch.is_tensor(v) and v.ndim > 0) else v
            for k, v in conditions.items()}


def _check_per_crystal(name: str, values, num: int) -> None:
    """``values`` (one entry per crystal) must have exactly ``num`` entries."""
    if values is not None and len(values) != num:
        raise ValueError(f"{name} has {len(values)} entries but num={num}: give one per crystal")


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> GenerativeModel:
    """Load the bundled model (``path=None``) or a checkpoint written by ``mattergen-kit train``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` (a ``ValueError``) for a
    corrupted file, a foreign file or a checkpoint of an unsupported format version.
    """
    from mattergen_kit.training.checkpoint import CheckpointError, load_checkpoint
    from mattergen_kit.training.checkpoint import load_model as _load

    path = Path(path) if path is not None else BUNDLED_CHECKPOINT
    if path == BUNDLED_CONDITIONED_CHECKPOINT and not path.is_file():
        raise FileNotFoundError(f"the conditioned bundled model {path.name} has not been built yet, so conditions can only "
                                "be used with a model you pass (model=/--model: a checkpoint from mattergen_kit.finetune "
                                "or `mattergen-kit train --config configs/conditioned_cpu.yaml`)")
    if path == BUNDLED_CHECKPOINT and not path.is_file():
        raise FileNotFoundError(f"the bundled model {path} is missing from this install; reinstall mattergen_kit "
                                "or pass the path of a checkpoint written by `mattergen-kit train`")
    ckpt = load_checkpoint(path)
    denoiser, diffusion, ckpt = _load(ckpt, device=device)
    probs = ckpt["meta"].get("num_atoms_histogram")
    if probs is None:
        raise CheckpointError(f"{path} has no number-of-atoms prior (meta['num_atoms_histogram']); re-export it with "
                              "mattergen_kit.training.export_lightning_checkpoint")
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 1 or not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise CheckpointError(f"{path} has an invalid number-of-atoms prior (meta['num_atoms_histogram'] must be "
                              "finite, non-negative and not all zero); re-export the checkpoint")
    return GenerativeModel(denoiser, diffusion, NumAtomsPrior(probs), dict(ckpt["meta"]), path)


def generate(num: int, seed: int | None = None, steps: int = DEFAULT_STEPS, batch_size: int = 64,
             model: GenerativeModel | str | Path | None = None, **kwargs) -> list:
    """Generate ``num`` crystals (pymatgen ``Structure`` list) with the bundled model or ``model``.

    >>> import mattergen_kit as mk
    >>> crystals = mk.generate(4, seed=0, steps=50)
    >>> len(crystals)
    4
    """
    if not isinstance(model, GenerativeModel):
        if model is None and (kwargs.get("conditions") or kwargs.get("guidance_scale")):
            model = BUNDLED_CONDITIONED_CHECKPOINT  # conditions need the conditioned bundled model
        model = load_model(model)
    return model.generate(num, seed=seed, steps=steps, batch_size=batch_size, **kwargs)
