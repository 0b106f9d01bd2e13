"""One sampling request, checked once: :class:`SamplingRequest` → ``resolve(model)`` → :class:`ResolvedRequest`.

Every entry point builds a request — ``GenerativeModel.sample/generate/iter_batches``, ``mk.generate``, the CLI,
the guidance panel, the Dask fan-out and the output-folder manifest — so a value is validated, defaulted and
encoded in one place, the same way for all of them (as a diffusers pipeline encodes a prompt once).

The guidance rule (one rule, every entry point)::

    guidance_scale = None  →  γ = DEFAULT_GUIDANCE_SCALE (2.0) when conditions are given, else 0
    γ = 0 with conditions  →  the unconditional model; a UserWarning says the conditions are not used
    γ > 0 without conditions → ValueError

Classifier-free guidance combines the two network outputs as ``u + γ (c − u)`` (:mod:`.guidance`; MatterGen's
``γ·cond + (1−γ)·uncond``): γ = 0 is the unconditional model, γ = 1 the conditional one, γ > 1 pushes further.
MatterGen's own default is 0, which is why its users report "property targets ignored"; the kit never does that
silently.

Seeds: the run's ``seed`` gives one generator; from it, in this order, the base seed of the batches, the Wyckoff
templates (``enforce_symmetry``) and the numbers of atoms are drawn. Batch ``start`` samples with the seed
``base_seed + start``, so a batch does not depend on how many batches ran before (resume, Dask).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from mattergen_kit.conditioning import check_conditions
from mattergen_kit.conditioning.properties import DEFAULT_GUIDANCE_SCALE, resolve_guidance_scale  # noqa: F401 (re-exported)
from mattergen_kit.constants import ALLOWED_Z, ELEMENT_SYMBOLS, atomic_number
from mattergen_kit.diffusion.atom_types import allowed_classes_mask
from mattergen_kit.sampling.few_step import choose_sampler, fast_sampler_options, sampler_steps
from mattergen_kit.sampling.pc_sampler import coherence_bias_points
from mattergen_kit.sampling.symmetry import SymmetryProjector, templates_for

#: torch CPU threads while sampling unless told otherwise: the network is small, one thread is never the slow case
DEFAULT_THREADS = 1
#: the most atoms a requested cell may have (formula / num_atoms); the bundled models are trained on ≤ 20 (MP-20)
#: and the largest data the kit has reach 52 (MPTS-52)
MAX_REQUEST_ATOMS = 200


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_crystal(value) -> bool:
    """A list / tuple / 1-D array or tensor holds one value per crystal; a scalar or a string holds one for all."""
    if isinstance(value, (list, tuple)):
        return True
    return (torch.is_tensor(value) or isinstance(value, np.ndarray)) and value.ndim > 0


@dataclass
class SamplingRequest:
    """What to sample. Fields left ``None`` take the model's or the kit's default in :meth:`resolve`.

    num, seed, steps (sampler steps; None = the model's recommended number), batch_size;
    conditions ({property: value or one value per crystal}) and guidance_scale (γ; the rule in the module doc);
    allowed_elements (symbols or Z), num_atoms (one N or one per crystal), formula ("Li4Fe4P4O16": every crystal
    has exactly these atoms) or fixed_atom_types (one element list per crystal); enforce_symmetry (Wyckoff
    templates of the ``space_group`` condition); sampler options type_temperature, coherence_bias, remask_rate
    (None = the model's measured defaults, see its card); threads, progress, trajectory_every.
    """

    num: int
    seed: int | None = None
    steps: int | None = None
    batch_size: int = 64
    conditions: dict[str, Any] | None = None
    guidance_scale: float | None = None
    allowed_elements: Any = None
    num_atoms: Any = None
    formula: str | None = None
    fixed_atom_types: Any = None
    enforce_symmetry: bool = False
    sampler: str | None = None
    type_temperature: float | None = None
    coherence_bias: Any = None
    remask_rate: float | None = None
    threads: int | None = DEFAULT_THREADS
    progress: bool = True
    trajectory_every: int | None = None

    def __post_init__(self):
        """Flags must be flags ("no" is truthy) and ``trajectory_every`` a positive step count, checked when the
        request is made (``sample`` reads ``trajectory_every`` before :meth:`resolve`)."""
        for name in ("enforce_symmetry", "progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.trajectory_every is not None and (not _is_int(self.trajectory_every) or self.trajectory_every < 1):
            raise ValueError(f"trajectory_every must be a positive number of steps, got {self.trajectory_every!r}")

    @classmethod
    def from_kwargs(cls, num, **kwargs) -> "SamplingRequest":
        """A request from keyword arguments; an unknown keyword is a ``TypeError`` naming the accepted ones."""
        if isinstance(num, SamplingRequest):
            if kwargs:
                return replace(num, **kwargs)
            return num
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown sampling option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}")
        return cls(num, **kwargs)

    def to_dict(self) -> dict:
        """The JSON form of everything that decides the crystals (the run manifest; compared on resume)."""
        out = {}
        for f in fields(self):
            if f.name in ("progress", "threads", "trajectory_every"):
                continue
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def resolve(self, model) -> "ResolvedRequest":
        """Check every field against ``model`` (its properties, prior, sampler defaults) and fill in defaults.

        ``ValueError`` (``TypeError`` for a wrong type) before any sampling, naming the field and what to give.
        """
        num = _check_count("num", self.num, minimum=1)
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer with 0 <= seed < 2**63, got {self.seed!r}")
        # the few-step sampler unless steps are given or the model is a MatterGen port (sampling/few_step.py, issue 21)
        sampler = choose_sampler(self.sampler, self.steps, model.meta)
        steps = _check_count("steps", sampler_steps(sampler, self.steps, model.meta), minimum=2)
        batch_size = _check_count("batch_size", self.batch_size, minimum=1)
        if self.threads is not None:
            _check_count("threads", self.threads, minimum=1)
        if self.trajectory_every is not None and (not _is_int(self.trajectory_every) or self.trajectory_every < 1):
            raise ValueError(f"trajectory_every must be a positive number of steps, got {self.trajectory_every!r}")
        gamma = resolve_guidance_scale(self.guidance_scale, self.conditions)

        allowed = check_allowed_elements(self.allowed_elements)
        conditions = check_conditions(self.conditions, model.property_specs, gamma)
        for name, value in conditions.items():
            if isinstance(value, list):
                _check_length(f"conditions[{name!r}]", value, num)
        system = conditions.get("chemical_system")
        if isinstance(system, list) and len(system) > 1 and all("-" not in s for s in system):
            raise ValueError(f"chemical_system={system!r} reads as one single-element system per crystal; for one "
                             f"system give {'-'.join(system)!r}, for elemental crystals one string for all")
        conditions, allowed = _restrict_to_chemical_system(conditions, allowed, num, model.diffusion)
        # at γ = 0 a chemical system still masks the elements and templates still carry the space group
        unused = sorted(c for c in conditions if c != "chemical_system"
                        and not (c == "space_group" and self.enforce_symmetry))
        if gamma == 0 and unused:
            warnings.warn(f"guidance_scale=0 samples the unconditional model: the conditions {unused} are "
                          f"not used. Give guidance_scale > 0 (default {DEFAULT_GUIDANCE_SCALE:g} with conditions) "
                          "to steer toward them.", UserWarning, stacklevel=3)

        num_atoms = self.num_atoms
        if num_atoms is not None:
            num_atoms = [num_atoms] * num if not _per_crystal(num_atoms) else list(
                num_atoms.tolist() if hasattr(num_atoms, "tolist") else num_atoms)
            _check_length("num_atoms", num_atoms, num)
            for n in num_atoms:
                _check_count("num_atoms", n, minimum=1, maximum=MAX_REQUEST_ATOMS)
            num_atoms = [int(n) for n in num_atoms]
        fixed = self.fixed_atom_types
        if self.formula is not None:
            fixed = formula_atom_types(self.formula, num, fixed, num_atoms)
        if fixed is not None:
            _check_length("fixed_atom_types", fixed, num)
            _check_fixed_atom_types(fixed)
            if num_atoms is not None and not torch.is_tensor(fixed) and any(
                    len(f) != n for f, n in zip(fixed, num_atoms)):
                raise ValueError("fixed_atom_types and num_atoms disagree: the fixed types set each crystal's number "
                                 "of atoms; leave num_atoms out")
        if torch.is_tensor(allowed):
            _check_class_mask(allowed, num, model.diffusion.atom_types.num_classes)
        if fixed is not None and allowed is not None:
            _check_fixed_within_allowed(fixed, allowed, self.formula)

        generator = torch.Generator().manual_seed(self.seed if self.seed is not None else torch.seed() % 2**63)
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        symmetry = None
        if self.enforce_symmetry:
            if fixed is not None:
                raise ValueError("enforce_symmetry takes the atoms' orbits from a Wyckoff template; it cannot be "
                                 "combined with formula= or fixed_atom_types=")
            symmetry, num_atoms = symmetry_templates(conditions, num, num_atoms, generator, allowed)
        if num_atoms is None and fixed is None:
            num_atoms = model.num_atoms_prior.sample(num, generator=generator)
        largest = max((int(n) for n in num_atoms), default=0) if num_atoms is not None else max(map(len, fixed))
        trained = max_trained_atoms(model)
        if trained and largest > trained:
            warnings.warn(f"cells of {largest} atoms are asked for, but this model was trained on cells of at most "
                          f"{trained}: expect distorted or non-finite cells", UserWarning, stacklevel=3)

        meta = model.meta
        type_temperature = (float(meta.get("type_temperature", 1.0)) if self.type_temperature is None
                            else _check_positive("type_temperature", self.type_temperature))
        coherence_bias = (meta.get("coherence_bias") if self.coherence_bias is None
                          else _check_coherence_bias(self.coherence_bias))
        remask_rate = (float(meta.get("remask_rate", 0.0)) if self.remask_rate is None
                       else _check_positive("remask_rate", self.remask_rate, allow_zero=True))
        request = replace(self, steps=steps, guidance_scale=gamma, sampler=sampler)
        steered = bool(conditions) and gamma > 0 or bool(self.enforce_symmetry)   # FAST_SAMPLER_STEERED
        return ResolvedRequest(request=request, num=num, steps=steps, batch_size=batch_size, base_seed=base_seed,
                               guidance_scale=gamma, conditions=conditions or None, allowed_elements=allowed,
                               num_atoms=num_atoms, fixed_atom_types=fixed, symmetry=symmetry,
                               sampler_options=dict(type_temperature=type_temperature,
                                                    coherence_bias=coherence_bias or None, remask_rate=remask_rate,
                                                    **(fast_sampler_options(model_device(model), steered)
                                                       if sampler == "fast" else {})))


@dataclass
class ResolvedRequest:
    """A request checked against one model: everything the sampler needs, per batch (:meth:`batch_kwargs`)."""

    request: SamplingRequest
    num: int
    steps: int
    batch_size: int
    base_seed: int
    guidance_scale: float
    conditions: dict | None
    allowed_elements: Any
    num_atoms: Any
    fixed_atom_types: Any
    symmetry: SymmetryProjector | None
    sampler_options: dict = field(default_factory=dict)

    def starts(self) -> range:
        return range(0, self.num, self.batch_size)

    def batch_kwargs(self, start: int) -> dict:
        """``num_atoms`` and the keyword arguments of ``PredictorCorrectorSampler.sample`` for batch ``start``."""
        stop = min(self.num, start + self.batch_size)
        allowed = self.allowed_elements
        if torch.is_tensor(allowed) and allowed.ndim == 2:  # one class mask per crystal (chemical systems)
            allowed = allowed[start:stop]
        kw = dict(seed=self.base_seed + start, guidance_scale=self.guidance_scale,
                  conditions=condition_rows(self.conditions, start, stop), progress=self.request.progress,
                  allowed_elements=allowed, record_every=self.request.trajectory_every)
        if self.fixed_atom_types is not None:
            kw["fixed_atom_types"] = self.fixed_atom_types[start:stop]
        if self.symmetry is not None:
            kw["symmetry"] = self.symmetry.slice(start, stop)
        kw["num_atoms"] = None if self.num_atoms is None else self.num_atoms[start:stop]
        return kw


def device_problem(device) -> str | None:
    """Why the kit cannot run on ``device`` here (None when it can): "cpu", or "cuda" / "cuda:k" with CUDA present.
    Checked where a device is given (``load_model``, ``evaluate``, the CLI) so that "tpu", "" or a GPU that is not
    there is one line naming the argument, not torch's error from inside ``module.to``."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        return f"device must be 'cpu' or 'cuda', got {device!r}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"device {device!r} is not a device name (use 'cpu' or 'cuda')"
    if dev.type not in ("cpu", "cuda"):
        return f"device {device!r}: only 'cpu' and 'cuda' are supported"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"device {device!r}: CUDA is not available on this machine (use 'cpu')"
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def model_device(model) -> torch.device:
    """Where the model's weights live (CPU for an object without parameters)."""
    try:
        return torch.device(model.device)
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def max_trained_atoms(model) -> int | None:
    """The largest number of atoms the model's number-of-atoms prior (its training data) gives weight to."""
    prior = getattr(model, "num_atoms_prior", None)
    return prior.largest_trained if prior is not None else None


def beyond_training(model, resolved: "ResolvedRequest") -> str:
    """What a request asks for beyond the model's training data ('' if nothing): cells larger than its prior's
    largest, or scalar targets more than 4 standard deviations from its training labels."""
    parts = []
    trained = max_trained_atoms(model)
    sizes = ([int(n) for n in resolved.num_atoms] if resolved.num_atoms is not None
             else [len(f) for f in resolved.fixed_atom_types or []])
    if trained and sizes and max(sizes) > trained:
        parts.append(f"cells of up to {max(sizes)} atoms (trained on at most {trained})")
    for name, value in (resolved.conditions or {}).items():
        spec = model.property_specs.get(name)
        if spec is None or spec.kind != "scalar":
            continue
        for v in (value if isinstance(value, list) else [value]):
            z = spec.training_sigmas(float(v))
            if z is not None and abs(z) > 4:
                parts.append(f"{name} = {float(v):g} ({z:+.1f} standard deviations from its training labels)")
                break
    return "; ".join(parts)


def _check_count(name: str, value, minimum: int, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum]: 2.5 or "3" is an error, not silently 2 or 3."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if torch.is_tensor(value) and value.ndim == 0 and not value.is_floating_point():
        value = int(value)
    if not _is_int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_positive(name: str, value, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if float(value) < 0 or (float(value) == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'≥' if allow_zero else '>'} 0, got {value!r}")
    return float(value)


def _check_length(name: str, values, num: int) -> None:
    """``values`` (one entry per crystal) must have exactly ``num`` entries."""
    if len(values) != num:
        raise ValueError(f"{name} has {len(values)} entries but num={num}: give one per crystal (or a single value "
                         "for all)")


def _check_fixed_atom_types(fixed) -> None:
    """One non-empty list of generable elements (symbols or Z) per crystal, at most MAX_REQUEST_ATOMS each (a
    500-atom list used to run for minutes; a noble gas used to be sampled as if the model knew it)."""
    if torch.is_tensor(fixed):
        return
    for b, crystal in enumerate(fixed):
        if isinstance(crystal, str) or not isinstance(crystal, (list, tuple, np.ndarray)):
            raise ValueError(f"fixed_atom_types[{b}] must be a list of elements (one list per crystal, e.g. "
                             f"[['Li', 'Li', 'O']]), got {crystal!r}")
        if not 1 <= len(crystal) <= MAX_REQUEST_ATOMS:
            raise ValueError(f"fixed_atom_types[{b}] has {len(crystal)} atoms; give 1 to {MAX_REQUEST_ATOMS} per "
                             "crystal (the bundled models are trained on cells of at most 20)")
        zs = []
        for e in crystal:
            try:
                zs.append(atomic_number(e.strip()) if isinstance(e, str) else _whole_z(e))
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"fixed_atom_types[{b}]: {e!r} is not an element symbol or atomic number") from None
        bad = sorted({ELEMENT_SYMBOLS[z - 1] for z in zs if z not in ALLOWED_Z})
        if bad:
            raise ValueError(f"fixed_atom_types[{b}]: {', '.join(bad)} cannot be generated (MatterGen's 76 elements: "
                             "Z 1-83 without noble gases, Tc and Pm)")


def _whole_z(value) -> int:
    """An atomic number 1-118 given as an integer (not True, not 1.5)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(value)
    if not 1 <= int(value) <= 118:
        raise ValueError(value)
    return int(value)


def _check_class_mask(mask: torch.Tensor, num: int, num_classes: int) -> None:
    """An ``allowed_elements`` tensor: a bool class mask (K,) or one per crystal (num, K), each allowing one class."""
    if mask.dtype != torch.bool or mask.shape not in ((num_classes,), (num, num_classes)):
        raise ValueError(f"allowed_elements as a tensor must be a bool class mask of shape ({num_classes},) or "
                         f"({num}, {num_classes}), got {mask.dtype} {tuple(mask.shape)}; or give element symbols")
    if not bool(mask.reshape(-1, num_classes).any(-1).all()):
        raise ValueError("allowed_elements masks out every element (of at least one crystal): allow one at least")


def _check_fixed_within_allowed(fixed, allowed, formula) -> None:
    """The atoms a request fixes (formula / fixed_atom_types) must lie inside its element restriction
    (allowed_elements, a chemical_system condition): 'Li2O' restricted to Fe used to sample Li2O without a word."""
    if torch.is_tensor(fixed):
        return
    for b, crystal in enumerate(fixed):
        zs = {atomic_number(e.strip()) if isinstance(e, str) else int(e) for e in crystal}
        if torch.is_tensor(allowed):
            row = allowed if allowed.ndim == 1 else allowed[b]
            outside = sorted(z for z in zs if not bool(row[z - 1]))
        else:
            outside = sorted(zs - set(int(z) for z in allowed))
        if outside:
            what = f"formula {formula!r}" if formula is not None else f"fixed_atom_types[{b}]"
            raise ValueError(f"{what} has {', '.join(ELEMENT_SYMBOLS[z - 1] for z in outside)}, outside the element "
                             "restriction (allowed_elements / the chemical_system condition): drop one of the two "
                             "or make them agree")


def _check_coherence_bias(value):
    """``coherence_bias``: False (off) or ``(t_points, beta_points)`` as the sampler takes it
    (:func:`~mattergen_kit.sampling.pc_sampler.coherence_bias_points`), checked before any sampling."""
    if value is False:
        return value
    try:
        coherence_bias_points(value)
    except ValueError:
        raise ValueError("coherence_bias must be False (off), None (the model's fitted β(t)) or (t_points, beta_points) "
                         f"of equal length with increasing t, got {value!r}") from None
    return value


def _plain(v):
    if torch.is_tensor(v) or isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def check_allowed_elements(allowed_elements) -> list[int] | None:
    """The atomic numbers of an ``allowed_elements`` restriction that the model can generate.

    ``None`` means no restriction. A restriction is never dropped: an empty list, an unknown symbol, or a
    list none of whose elements is among MatterGen's 76 generable elements (noble gases, Tc, Pm and Z ≥ 84
    are not) raises ``ValueError``; elements of the list that cannot be generated are named in a warning.
    """
    if allowed_elements is None or torch.is_tensor(allowed_elements):
        return allowed_elements
    if isinstance(allowed_elements, (str, int)) and not isinstance(allowed_elements, bool):
        allowed_elements = [allowed_elements]
    if not isinstance(allowed_elements, (list, tuple, set, frozenset, np.ndarray)):
        raise ValueError(f"allowed_elements must be a list of element symbols or atomic numbers (e.g. ['Li', 'O']), "
                         f"got {allowed_elements!r}")
    zs = []
    for e in allowed_elements:
        try:
            zs.append(atomic_number(e.strip()) if isinstance(e, str) else _whole_z(e))
        except (ValueError, KeyError, TypeError):
            what = "an element symbol or atomic number" if isinstance(e, str) else "an atomic number (1-118)"
            raise ValueError(f"allowed_elements: {e!r} is not {what}") from None
    if not zs:
        raise ValueError("allowed_elements is empty: give at least one element (or None for no restriction)")
    usable = [z for z in dict.fromkeys(zs) if z in ALLOWED_Z]
    unusable = [ELEMENT_SYMBOLS[z - 1] for z in dict.fromkeys(zs) if z not in ALLOWED_Z]
    if not usable:
        raise ValueError(f"none of the allowed elements ({', '.join(unusable)}) can be generated: the model generates "
                         "only MatterGen's 76 elements (Z 1-83 without noble gases, Tc and Pm)")
    if unusable:
        warnings.warn(f"allowed_elements: {', '.join(unusable)} cannot be generated by this model and will not "
                      "appear; sampling uses the rest", stacklevel=3)
    return usable


def _restrict_to_chemical_system(conditions: dict, allowed, num: int, diffusion):
    """(conditions, allowed elements): a ``chemical_system`` condition also restricts the sampled elements to the
    system (ref §12.2), intersected with ``allowed_elements``; per-crystal systems give a (num, K) class mask."""
    system = conditions.get("chemical_system")
    if system is None:
        return conditions, allowed
    if torch.is_tensor(allowed):
        raise ValueError("give allowed_elements as symbols or atomic numbers together with a chemical_system condition")
    base = set(allowed) if isinstance(allowed, list) else None
    masks = []
    for one in ([system] if isinstance(system, str) else system):
        zs = {atomic_number(e) for e in one.split("-")}
        if base is not None:
            zs &= base
            if not zs:
                raise ValueError(f"chemical_system {one!r} shares no element with allowed_elements")
        masks.append(allowed_classes_mask(sorted(zs), diffusion.atom_types.num_classes))
    if isinstance(system, str):
        return conditions, sorted(int(z) + 1 for z in torch.nonzero(masks[0]).flatten())
    return conditions, torch.stack(masks)


def formula_atom_types(formula: str, num: int, fixed_atom_types=None, num_atoms=None) -> list[list[str]]:
    """One list of element symbols per crystal for a fixed formula (crystal-structure prediction: the types
    are given, lattice and coordinates generated). The formula is taken as written: "Li2O" is a 3-atom cell,
    "Li4O2" a 6-atom one."""
    if fixed_atom_types is not None:
        raise ValueError("give either formula or fixed_atom_types, not both")
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'Li2O', got {formula!r}")
    # pymatgen only here: sampling runs on machines without it (a lent GPU's image: tools/sample_on_device.py)
    from pymatgen.core import Composition

    try:
        comp = Composition(formula)
    except Exception as err:  # pymatgen raises several types for a bad formula
        raise ValueError(f"formula {formula!r} is not a chemical formula ({err})") from None
    if not comp.num_atoms or any(abs(n - round(n)) > 1e-8 for n in comp.values()):
        raise ValueError(f"formula {formula!r} must have whole numbers of atoms")
    if comp.num_atoms > MAX_REQUEST_ATOMS:
        raise ValueError(f"formula {formula!r} has {int(comp.num_atoms)} atoms; the kit samples cells of at most "
                         f"{MAX_REQUEST_ATOMS} atoms (the bundled models are trained on cells of at most 20)")
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
    value = (conditions or {}).get("space_group")
    if value is None:
        raise ValueError("enforce_symmetry needs a space_group condition, e.g. conditions={'space_group': 225}")
    groups = [int(v) for v in value] if _per_crystal(value) else [int(value)] * num
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


def condition_rows(conditions: dict | None, start: int, stop: int) -> dict | None:
    """Conditions of crystals start:stop: per-crystal values (lists, 1-D tensors) sliced, single values kept."""
    if conditions is None:
        return None
    return {k: v[start:stop] if _per_crystal(v) else v for k, v in conditions.items()}


__all__ = ["SamplingRequest", "ResolvedRequest", "DEFAULT_GUIDANCE_SCALE", "DEFAULT_THREADS", "resolve_guidance_scale",
           "check_allowed_elements", "device_problem", "formula_atom_types", "symmetry_templates", "condition_rows"]
