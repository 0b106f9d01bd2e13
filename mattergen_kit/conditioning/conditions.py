"""Per-crystal conditions of a training batch, and independent per-property condition dropout.

``batch_conditions(batch, names)`` reads the labels of a :class:`CrystalBatch` (``batch.properties``;
``space_group`` also answers to the datasets' ``spacegroup`` column). ``drop_conditions`` blanks each
(crystal, property) label independently with probability p (default 0.2):

    keep_{b,p} ~ Bernoulli(1 − p)     label_{b,p} ← label_{b,p} if keep_{b,p} else absent

so the model sees every subset of its properties during training, and an absent label (missing in the data
or dropped) gets that property's null embedding. MatterGen drops all fields of a crystal together
(ref §8.4, ``dropout_fields_iid = false``); independent dropout is what lets one checkpoint serve any subset.
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


def drop_conditions(conditions: dict[str, Any], p: float, generator: torch.Generator | None = None
                    ) -> dict[str, Any]:
    """Each label dropped (→ absent) independently with probability ``p``; returns a new dict."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"condition dropout must be in [0, 1], got {p}")
    out = {}
    for name, values in conditions.items():
        n = len(values)
        device = values.device if torch.is_tensor(values) else None
        drop = torch.rand(n, generator=generator, device=generator.device if generator is not None else None) < p
        if torch.is_tensor(values):
            dropped = values.clone().float() if not values.is_floating_point() else values.clone()
            dropped[drop.to(values.device)] = float("nan")
            out[name] = dropped.to(device)
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
