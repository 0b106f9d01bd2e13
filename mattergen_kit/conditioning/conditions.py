"""Per-crystal conditions of a training batch, and condition dropout.

``batch_conditions(batch, names)`` reads the labels of a :class:`CrystalBatch` (``batch.properties``;
``space_group`` also answers to the datasets' ``spacegroup`` column). ``drop_conditions`` blanks labels
(→ absent → that property's null embedding), per crystal b, in one of two modes:

    "independent"   keep_{b,p} ~ Bernoulli(1 − p) for every property p separately
    "subsets"       with probability p: keep nothing (the unconditional model, MatterGen's rule, ref §8.4);
    (default)       otherwise k ~ Uniform{1..P} and a uniformly random k-subset of the P properties is kept

Why "subsets" is the default for several properties: with independent dropout at p = 0.2 and P = 8, a crystal
is fully unconditional with probability 0.2^8 ≈ 3·10⁻⁶ and shows one property alone with 8·0.8·0.2^7 ≈ 8·10⁻⁵,
so the unconditional branch of classifier-free guidance and single-property conditions are almost never
trained. "subsets" gives P(all null) ≥ p, P(only property p) = (1 − p)/P², P(all kept) = (1 − p)/P — every
subset is trained, which is what lets one checkpoint serve any subset. For P = 1 both modes are the same.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

ALIASES = {"space_group": ("space_group", "spacegroup")}


def batch_conditions(batch, names: Iterable[str]) -> dict[str, Any]:
    """{name: (B,) float tensor | list} of the labels in ``batch.properties``; missing column → KeyError."""
    out = {}
    for name in names:
        for key in ALIASES.get(name, (name,)):
            if key in batch.properties:
                out[name] = batch.properties[key]
                break
        else:
            raise KeyError(f"the training data has no {name!r} labels (columns: {sorted(batch.properties)}); "
                           "attach them with mattergen_kit.conditioning.attach_labels")
    return out


MODES = ("subsets", "independent")


def drop_conditions(conditions: dict[str, Any], p: float, generator: torch.Generator | None = None,
                    mode: str = "subsets") -> dict[str, Any]:
    """A new dict with labels dropped (NaN / None) as in the module docstring; ``conditions`` is not changed."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout must be in [0, 1], got {p}")
    if mode not in MODES:
        raise ValueError(f"condition dropout mode must be one of {MODES}, got {mode!r}")
    names = list(conditions)
    if not names:
        return {}
    n, P = len(conditions[names[0]]), len(names)
    dev = generator.device if generator is not None else None
    if mode == "independent":
        keep = torch.rand(n, P, generator=generator, device=dev) >= p
    else:
        k = torch.randint(1, P + 1, (n,), generator=generator, device=dev)                # subset size
        rank = torch.rand(n, P, generator=generator, device=dev).argsort(1).argsort(1)   # random order
        keep = (rank < k[:, None]) & (torch.rand(n, generator=generator, device=dev) >= p)[:, None]
    out = {}
    for j, name in enumerate(names):
        values, drop = conditions[name], ~keep[:, j]
        if len(values) != n:
            raise ValueError(f"condition {name!r} has {len(values)} values, {names[0]!r} has {n}")
        if torch.is_tensor(values):
            dropped = values.clone().float() if not values.is_floating_point() else values.clone()
            dropped[drop.to(values.device)] = float("nan")
            out[name] = dropped
        else:
            out[name] = [None if d else v for v, d in zip(values, drop.tolist())]
    return out


def dataset_properties(dataset):
    """The property DataFrame of a CrystalDataset, or of the rows of a ``torch.utils.data.Subset`` of one."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        return dataset_properties(dataset.dataset).iloc[list(dataset.indices)].reset_index(drop=True)
    if not hasattr(dataset, "properties"):
        raise TypeError(f"{type(dataset).__name__} has no .properties table to read condition labels from")
    return dataset.properties


def fit_property_specs(names, dataset, specs: dict | None = None) -> list:
    """Registry specs of ``names`` (or ``specs[name]`` for custom ones) with normalisation stats fitted on the
    training labels of ``dataset`` (absent labels ignored); ``ValueError`` if a property has no labels at all."""
    from mattergen_kit.conditioning.properties import get_spec

    frame = dataset_properties(dataset)
    out = []
    for name in names:
        spec = (specs or {}).get(name) or get_spec(name)
        column = next((c for c in ALIASES.get(name, (name,)) if c in frame.columns), None)
        if column is None:
            raise ValueError(f"the training data has no {name!r} column (columns: {sorted(frame.columns)})")
        values = frame[column]
        if values.isna().all():
            raise ValueError(f"the training data has no {name!r} labels (all {len(values)} are missing)")
        out.append(spec.fit_normalisation(values))
    return out
