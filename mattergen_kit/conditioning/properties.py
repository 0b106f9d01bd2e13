"""Property registry: what each conditioning property is, its valid range, and how a value becomes a tensor.

A :class:`PropertySpec` is plain data (stored in a conditioned checkpoint's ``meta["properties"]``):

    kind "scalar"           y → (log10 y if log10) → ŷ = (y − μ) / σ       μ, σ: normalisation stats of the
                                                                              training labels (nanmean and
                                                                              population std + 1e−5, ref §8.2)
    kind "categorical"      value → index into ``categories`` (space group: 1..230 → 0..229)
    kind "chemical_system"  "Li-Fe-P-O" → multi-hot over MatterGen's 76 generable elements (ALLOWED_Z order)

An absent value (NaN, None, "", or a dropped label in training) is encoded as "not present": the embedding
then uses that property's learned null vector (adapter.py).

Stable names (``PROPERTIES``): chemical_system, space_group, band_gap, formation_energy_per_atom,
e_above_hull, hhi_production, magnetic_density, bulk_modulus. ``magnetic_density`` and ``bulk_modulus``
labels of the MP structures are ML estimates (CHGNet), see ``labels.py`` / ``label_job.py``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mattergen_kit.diffusion.atom_types import ALLOWED_Z

KINDS = ("scalar", "categorical", "chemical_system")
NUM_ELEMENTS = len(ALLOWED_Z)  # 76
_ELEMENT_INDEX = {z: i for i, z in enumerate(ALLOWED_Z)}


@dataclass
class PropertySpec:
    """One conditioning property. ``low``/``high`` bound valid values (inclusive unless ``*_open``)."""

    name: str
    kind: str = "scalar"
    unit: str = ""
    description: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False           # value must be > low (bulk modulus: log10 needs > 0)
    log10: bool = False              # normalise log10(y) instead of y
    integer: bool = False            # categorical values must be integers (space group)
    mean: float | None = None        # normalisation stats (scalar kinds), set by fit_normalisation
    std: float | None = None
    categories: list | None = None   # categorical kinds: the allowed values, index = position
    ml_label: bool = False           # the training labels are ML estimates, not DFT

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"property {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "categorical" and not self.categories:
            raise ValueError(f"categorical property {self.name!r} needs its categories")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PropertySpec":
        return cls(**d)

    @property
    def fitted(self) -> bool:
        return self.kind != "scalar" or (self.mean is not None and self.std is not None)

    # ------------------------------------------------------------------ validation of one user value
    def check(self, value: Any) -> Any:
        """The validated value (raises ``ValueError`` naming the property and the problem)."""
        if isinstance(value, (bool, np.bool_)) or (torch.is_tensor(value) and value.dtype == torch.bool):
            raise ValueError(f"{self.name} must be {'a value' if self.kind != 'scalar' else 'a number'}, got {value!r}"
                             " (True / False would be read as 1 / 0)")
        if self.kind == "chemical_system":
            return "-".join(element_symbols(value, self.name))
        if self.kind == "categorical":
            if self.integer:
                try:
                    as_float = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{self.name} must be an integer, got {value!r}") from None
                if not math.isfinite(as_float) or as_float != int(as_float):
                    raise ValueError(f"{self.name} must be an integer, got {value!r}")
                value = int(as_float)
            elif value not in self.categories and str(value) in self.categories:  # "--condition phase=1" → "1"
                value = str(value)
            if value not in self.categories:
                if self.integer and all(isinstance(c, int) for c in self.categories):
                    lo, hi = min(self.categories), max(self.categories)
                    raise ValueError(f"{self.name} = {value} is outside {lo}–{hi}")
                shown = ", ".join(map(repr, self.categories[:20])) + (" …" if len(self.categories) > 20 else "")
                raise ValueError(f"{self.name} = {value!r} is not one of the categories the model knows: {shown}")
            return value
        try:
            y = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a number, got {value!r}") from None
        if not math.isfinite(y):
            raise ValueError(f"{self.name} must be a finite number, got {value!r}")
        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and (y <= self.low if self.low_open else y < self.low):
            raise ValueError(f"{self.name} = {y}{unit} is out of range: it must be "
                             f"{'>' if self.low_open else '≥'} {self.low}{unit}")
        if self.high is not None and y > self.high:
            raise ValueError(f"{self.name} = {y}{unit} is out of range: it must be ≤ {self.high}{unit}")
        self._check_trained_range(y, unit)
        return y

    #: a target more than this many standard deviations from the training labels is refused: the model has never
    #: seen anything like it, and guidance toward it only drives the sampler off the data (NaN cells)
    MAX_TARGET_SIGMAS = 8.0

    def training_sigmas(self, y: float) -> float | None:
        """z = (T(y) − μ) / σ: how many standard deviations of the training labels ``y`` lies from their mean
        (T = log10 where set); None without normalisation statistics (categorical kinds, an unfitted spec)."""
        if self.mean is None or not self.std:
            return None
        return (float(self._transform(np.asarray([y]))[0]) - self.mean) / self.std

    def _check_trained_range(self, y: float, unit: str) -> None:
        """|z| > MAX_TARGET_SIGMAS (:meth:`training_sigmas`) is an error that says which targets the model can steer
        toward."""
        z = self.training_sigmas(y)
        if z is None or (math.isfinite(z) and abs(z) <= self.MAX_TARGET_SIGMAS):
            return
        k = self.MAX_TARGET_SIGMAS
        lo, hi = self.mean - k * self.std, self.mean + k * self.std
        if self.log10:
            lo, hi = 10 ** lo, 10 ** hi
        if self.low is not None:
            lo = max(lo, self.low)
        raise ValueError(f"{self.name} = {y:g}{unit} is far outside the labels this model was trained on (more than "
                         f"{k:g} standard deviations away): it cannot steer toward it; ask for a value between "
                         f"{lo:.3g} and {hi:.3g}{unit}")

    # ------------------------------------------------------------------ training labels → tensors
    def fit_normalisation(self, values: Sequence) -> "PropertySpec":
        """A copy with μ, σ of the present training labels (after log10 if set): nanmean, population std + 1e−5."""
        if self.kind != "scalar":
            return self
        y = self._transform(np.asarray([_as_float(v) for v in values], dtype=np.float64))
        y = y[np.isfinite(y)]
        if len(y) == 0:
            raise ValueError(f"no {self.name} labels in the training data: cannot condition on it")
        return replace(self, mean=float(y.mean()), std=float(y.std()) + 1e-5)

    def _transform(self, y: np.ndarray) -> np.ndarray:
        if not self.log10:
            return y
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)

    def encode(self, values: Any, num: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoded (B,) or (B,76), present (B,) bool) for ``num`` crystals.

        ``values``: one value for all crystals, a list/array/tensor of ``num`` values (NaN/None = absent), or an
        already encoded tensor (categorical: long indices with −1 = absent; chemical system: (B, 76) multi-hot).
        Training labels are NOT range-checked here (NaN, and out-of-range labels, are treated as absent);
        user values are checked by :func:`check_conditions` before sampling.
        """
        if self.kind == "chemical_system":
            if torch.is_tensor(values) and values.ndim == 2:
                hot = values.float()
            else:
                items = [values] * num if isinstance(values, str) or values is None else list(values)
                hot = torch.zeros(len(items), NUM_ELEMENTS)
                rows = [(r, c) for r, v in enumerate(items) for c in _multi_hot_index(v)]
                if rows:
                    hot[torch.tensor(rows).T.unbind()] = 1.0
            _check_len(self.name, len(hot), num)
            hot = hot.to(device)
            return hot, hot.sum(-1) > 0
        if self.kind == "categorical":
            if torch.is_tensor(values) and values.dtype == torch.long:
                idx = values.reshape(-1)
                if idx.numel() == 1 and num != 1:
                    idx = idx.expand(num)
            else:
                items = _as_list(values, num)
                lookup = _category_lookup(self)
                idx = torch.tensor([lookup.get(_category_key(v, self.integer), -1) for v in items], dtype=torch.long)
            _check_len(self.name, len(idx), num)
            idx = idx.to(device)
            return idx, idx >= 0
        if not self.fitted:
            raise ValueError(f"property {self.name!r} has no normalisation stats: fit_normalisation first")
        if torch.is_tensor(values) and values.is_floating_point() and values.numel() == num:
            # the same transform on the tensor's own device: no host round trip in a GPU training loop
            y = values.reshape(-1).double()
            if self.log10:
                y = torch.where(y > 0, torch.log10(torch.where(y > 0, y, torch.ones_like(y))), float("nan"))
            present = torch.isfinite(y)
            norm = torch.where(present, (y - self.mean) / self.std, torch.zeros_like(y))
            return norm.float().to(device), present.to(device)
        if torch.is_tensor(values):
            y = values.detach().double().cpu().reshape(-1).numpy()
        else:
            y = np.asarray([_as_float(v) for v in _as_list(values, num)], dtype=np.float64)
        if y.size == 1 and num != 1:
            y = np.repeat(y, num)
        _check_len(self.name, len(y), num)
        y = self._transform(y)
        present = np.isfinite(y)
        norm = np.where(present, (y - self.mean) / self.std, 0.0)
        return (torch.as_tensor(norm, dtype=torch.float32, device=device),
                torch.as_tensor(present, dtype=torch.bool, device=device))


def _as_float(v) -> float:
    if v is None or (isinstance(v, str) and not v.strip()):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _as_list(values, num: int) -> list:
    if values is None or isinstance(values, (str, int, float, np.integer, np.floating)):
        return [values] * num
    if torch.is_tensor(values):
        return values.reshape(-1).tolist()
    return list(values)


def _check_len(name: str, got: int, num: int) -> None:
    if got != num:
        raise ValueError(f"condition {name!r} has {got} values for {num} crystals")


def _category_key(v, integer: bool):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if integer:
        try:
            return int(v)
        except (TypeError, ValueError):
            return None
    return v if isinstance(v, str) else (int(v) if float(v) == int(v) else float(v))


def _category_lookup(spec: PropertySpec) -> dict:
    return {c: i for i, c in enumerate(spec.categories)}


def element_symbols(system, name: str = "chemical_system") -> list[str]:
    """Alphabetically sorted unique element symbols (the datasets' ``chemical_system`` order) of "Li-Fe-P-O" (or a list of symbols); ``ValueError`` for an unknown
    element or one the model cannot generate (noble gases, Tc, Pm, Z ≥ 84)."""
    from mattergen_kit.constants import ELEMENT_SYMBOLS, atomic_number

    if not isinstance(system, (str, list, tuple)):
        raise ValueError(f"{name} must be a string such as 'Li-Fe-P-O' (or a list of symbols), got {system!r}")
    parts = system.split("-") if isinstance(system, str) else list(system)
    parts = [p.strip() if isinstance(p, str) else p for p in parts]
    if not parts or any(p in ("", None) for p in parts):
        raise ValueError(f"{name} must look like 'Li-Fe-P-O', got {system!r}")
    zs = []
    for p in parts:
        try:
            zs.append(atomic_number(p))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{name}: {p!r} is not an element symbol") from None
    bad = [ELEMENT_SYMBOLS[z - 1] for z in zs if z not in _ELEMENT_INDEX]
    if bad:
        raise ValueError(f"{name}: {', '.join(bad)} cannot be generated (the model knows MatterGen's 76 elements: "
                         "Z 1–83 without noble gases, Tc and Pm)")
    return sorted({ELEMENT_SYMBOLS[z - 1] for z in zs})


@lru_cache(maxsize=65536)  # one entry per distinct chemical system of the training data
def _multi_hot_str(system: str) -> tuple[int, ...]:
    from mattergen_kit.constants import atomic_number

    idx = []
    for p in system.split("-"):
        z = atomic_number(p.strip())
        if z not in _ELEMENT_INDEX:  # a training label with an element outside the 76: treat as absent
            return ()
        idx.append(_ELEMENT_INDEX[z])
    return tuple(sorted(set(idx)))


def _multi_hot_index(v) -> tuple[int, ...]:
    """Positions (in ALLOWED_Z order) of the elements of one chemical system (str or list of symbols); () = absent."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return ()
    if not isinstance(v, str):
        v = "-".join(str(x) for x in v)
    return _multi_hot_str(v)


# ============================================================================================ the registry
PROPERTIES: dict[str, PropertySpec] = {spec.name: spec for spec in [
    PropertySpec("chemical_system", "chemical_system", description="elements of the crystal, e.g. 'Li-Fe-P-O'"),
    PropertySpec("space_group", "categorical", description="international space-group number (spglib, symprec 0.1)",
                 integer=True, categories=list(range(1, 231))),
    PropertySpec("band_gap", unit="eV", low=0.0, description="DFT (PBE) band gap, Materials Project"),
    PropertySpec("formation_energy_per_atom", unit="eV/atom", low=-10.0, high=5.0,
                 description="DFT formation energy per atom, Materials Project"),
    PropertySpec("e_above_hull", unit="eV/atom", low=0.0, description="energy above the convex hull, Materials Project"),
    PropertySpec("hhi_production", low=0.0, high=10000.0,
                 description="Herfindahl–Hirschman index of production (pymatgen HHIModel, weight-fraction weighted)"),
    PropertySpec("magnetic_density", unit="μB/Å³", low=0.0,
                 description="total |magnetic moment| / volume; ML estimate from CHGNet site magmoms", ml_label=True),
    PropertySpec("bulk_modulus", unit="GPa", low=0.0, low_open=True, log10=True,
                 description="bulk modulus; ML estimate (CHGNet equation-of-state fit) for MP structures, "
                             "AFLOW AEL-AGL (DFT) for the AFLOW set", ml_label=True),
]}


def get_spec(name: str) -> PropertySpec:
    if name not in PROPERTIES:
        raise ValueError(f"unknown property {name!r}; known properties: {', '.join(PROPERTIES)} "
                         "(fine-tune on your own with mattergen_kit.finetune)")
    return PROPERTIES[name]


#: γ when conditions are given and no guidance_scale is (the CLI's and the panel's long-standing default)
DEFAULT_GUIDANCE_SCALE = 2.0


def resolve_guidance_scale(guidance_scale, conditions) -> float:
    """The guidance scale γ by the kit's one rule (every entry point: API, CLI, panel, Dask; sampling/request.py):
    None → 2.0 with conditions, 0 without; else a finite number ≥ 0 (TypeError for a non-number, ValueError for a
    negative or non-finite one). Guidance combines the two network outputs as u + γ (c − u)."""
    if guidance_scale is None:
        return DEFAULT_GUIDANCE_SCALE if conditions else 0.0
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"guidance_scale must be a number (e.g. 2.0), got {guidance_scale!r} "
                        f"({type(guidance_scale).__name__})")
    gamma = float(guidance_scale)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"guidance_scale must be ≥ 0 and finite (0 = unconditional), got {guidance_scale!r}")
    return gamma


def check_conditions(conditions: dict | None, specs: dict[str, PropertySpec], guidance_scale: float | None = 0.0
                     ) -> dict[str, Any]:
    """Validate user conditions against a model's property specs before any sampling.

    Errors (``ValueError``): γ < 0 (γ is read by :func:`resolve_guidance_scale`, the one γ rule); conditions or
    γ ≠ 0 for a model without conditioning; a property the model was not trained on (its list is named); an
    out-of-range value or unknown element. Per-crystal lists are checked value by value. Returns the checked
    conditions (chemical systems normalised to "A-B-C").
    """
    gamma = resolve_guidance_scale(guidance_scale, conditions)
    if conditions is not None and not isinstance(conditions, Mapping):
        raise ValueError(f"conditions must be a dict {{property: value}}, e.g. {{'band_gap': 3.0}}, got {conditions!r}")
    conditions = dict(conditions or {})
    names = [k for k in conditions if not isinstance(k, str)]
    if names:
        raise ValueError(f"condition names must be property names (strings), got {names!r}")
    if not specs:
        if conditions or gamma != 0:
            what = f"conditions {sorted(conditions)}" if conditions else f"guidance_scale={guidance_scale}"
            raise ValueError(f"this model has no property conditioning, so {what} would be ignored; use a "
                             "conditioned checkpoint (mattergen_kit.finetune / configs/conditioned_cpu.yaml)")
        return {}
    unknown = [k for k in conditions if k not in specs]
    if unknown:
        raise ValueError(f"this model was not trained on {', '.join(map(repr, unknown))}; it can be conditioned on: "
                         f"{', '.join(specs)}")
    if gamma != 0 and not conditions:
        raise ValueError(f"guidance_scale={guidance_scale} needs conditions (properties: {', '.join(specs)})")
    out = {}
    for name, value in conditions.items():
        spec = specs[name]
        if isinstance(value, (list, tuple)) or (torch.is_tensor(value) and value.ndim > 0) or (
                isinstance(value, np.ndarray) and value.ndim > 0):
            out[name] = [spec.check(v) for v in list(value)]
        else:
            out[name] = spec.check(value.item() if torch.is_tensor(value) else value)
    return out
