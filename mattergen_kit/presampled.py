"""Samples drawn elsewhere (a lent GPU: tools/sample_on_device.py), served through ``generate()``.

A store is one torch file ``{"format": STORE_FORMAT, "jobs": {key: {atom_types, frac_coords, lattice, num_atoms,
seconds, batch_size, device, label}}}``; the key says what ``generate`` was asked for (:func:`job_key`), so a
benchmark that judges a model's samples (``conditioning.adherence.run``) judges a store's instead, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

STORE_FORMAT = "mattergen_kit.presampled"


def job_key(model: str, num: int, seed: int, steps: int, conditions: dict | None, guidance_scale: float) -> str:
    """The store key of one request (what ``generate`` was asked for; the model by file name)."""
    cond = json.dumps(conditions or {}, sort_keys=True)
    return f"{Path(model).name}|n={num}|seed={seed}|steps={steps}|cond={cond}|g={float(guidance_scale):g}"


def job_batch(job: dict):
    """The crystals of one stored job as a CrystalBatch."""
    from mattergen_kit.data import CrystalBatch

    return CrystalBatch(job["atom_types"], job["frac_coords"], job["lattice"], job["num_atoms"])


def job_by_label(store: str | Path | dict, label: str) -> tuple[str, dict]:
    """``(key, job)`` of the one job of a store labelled ``label`` (e.g. ``base_1000x100``); ``KeyError`` naming the
    labels it holds otherwise."""
    jobs = (store if isinstance(store, dict) else torch.load(store, weights_only=True))["jobs"]
    match = [k for k, v in jobs.items() if v.get("label") == label]
    if len(match) != 1:
        raise KeyError(f"the store holds {len(match)} jobs labelled {label!r} (labels: "
                       f"{[v.get('label') for v in jobs.values()]})")
    return match[0], jobs[match[0]]


class PresampledModel:
    """A store of samples drawn elsewhere, served through ``generate()`` like a model (``KeyError`` naming the
    request when the store does not hold it). ``model_name``: the file name of the model they came from."""

    def __init__(self, store: str | Path | dict, model_name: str):
        self.store = store if isinstance(store, dict) else torch.load(store, weights_only=True)
        if self.store.get("format") != STORE_FORMAT:
            raise ValueError(f"{store} is not a store of tools/sample_on_device.py")
        self.model_name = Path(model_name).name
        self.source = "" if isinstance(store, dict) else str(store)

    def batch(self, num: int, seed: int, steps: int, conditions: dict | None = None, guidance_scale: float = 0.0):
        key = job_key(self.model_name, num, seed, steps, conditions, guidance_scale)
        if key not in self.store["jobs"]:
            raise KeyError(f"the store holds no samples for {key}; draw them with tools/sample_on_device.py")
        return job_batch(self.store["jobs"][key])

    def generate(self, num: int, seed: int = 0, steps: int = 1000, conditions: dict | None = None,
                 guidance_scale: float = 0.0, enforce_symmetry: bool = False, **_ignored):
        if enforce_symmetry:
            raise ValueError("templated samples (enforce_symmetry) are drawn here, not on the device")
        return self.batch(num, seed, steps, conditions, guidance_scale).to_structures()
