"""Samples drawn elsewhere (a lent GPU: tools/sample_on_device.py), served through ``generate()``.

A store is ``{"format": STORE_FORMAT, "jobs": {key: {atom_types, frac_coords, lattice, num_atoms, seconds,
batch_size, device, label}}}``; the key says what ``generate`` was asked for (:func:`job_key`), so a benchmark that
judges a model's samples (``studies.adherence.run``) judges a store's instead, unchanged.

On disk a store is text, ``*.json.gz`` (what the repository commits: readable, diffable, no pickle): each job's
arrays as lists, floats written as the shortest decimal that reads back to the same float32, so a round trip is
exact. ``draw`` on a device may write ``*.pt`` (tensors, read with ``weights_only=True``); :func:`save_store` converts.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import torch

from mattergen_kit.data import CrystalBatch
from mattergen_kit.sampling.request import SamplingRequest, resolve_guidance_scale

STORE_FORMAT = "mattergen_kit.presampled"
_ARRAYS = {"atom_types": torch.int64, "frac_coords": torch.float32, "lattice": torch.float32, "num_atoms": torch.int64}


def _to_text(value):
    """A tensor as nested lists; a float32 as the shortest decimal that reads back to the same float32."""
    array = value.detach().cpu().numpy()
    if array.dtype != np.float32:
        return array.tolist()
    flat = [float(np.format_float_positional(x, unique=True)) for x in array.ravel()]
    return np.array(flat, dtype=object).reshape(array.shape).tolist()


def check_job(key: str, job) -> None:
    """ValueError unless a stored job is a set of crystals the kit can serve: the four arrays with matching sizes
    (``num_atoms.sum() == len(atom_types) == len(frac_coords)``, one lattice per crystal), finite coordinates and
    lattices, atomic numbers 1..118. A store with NaN lattices used to be served as crystals."""
    if not isinstance(job, dict) or any(not isinstance(job.get(n), torch.Tensor) for n in _ARRAYS):
        raise ValueError(f"job {key!r} lacks the arrays {sorted(_ARRAYS)}")
    types, coords, lattice, counts = (job[n] for n in ("atom_types", "frac_coords", "lattice", "num_atoms"))
    n_atoms = int(counts.sum()) if counts.numel() else 0
    if (counts.dim() != 1 or bool((counts < 1).any()) or types.shape != (n_atoms,) or coords.shape != (n_atoms, 3)
            or lattice.shape != (len(counts), 3, 3)):
        raise ValueError(f"job {key!r}: array sizes do not fit (num_atoms sums to {n_atoms}, atom_types "
                         f"{tuple(types.shape)}, frac_coords {tuple(coords.shape)}, lattice {tuple(lattice.shape)})")
    if not (torch.isfinite(coords).all() and torch.isfinite(lattice).all()):
        raise ValueError(f"job {key!r} holds non-finite coordinates or lattices (NaN/inf): not crystals")
    if bool(((types < 1) | (types > 118)).any()):
        raise ValueError(f"job {key!r} holds atomic numbers outside 1..118")


def load_store(path: str | Path) -> dict:
    """A store from ``*.json.gz`` (text) or ``*.pt`` (tensors, ``weights_only=True``); ``ValueError`` if the file is
    not a store. Each job is checked when it is served (:func:`job_batch`)."""
    path = Path(path)
    try:
        if path.name.endswith(".json.gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                store = json.load(fh)
            for job in store.get("jobs", {}).values():
                for name, dtype in _ARRAYS.items():
                    job[name] = torch.tensor(job[name], dtype=dtype)
                job["lattice"] = job["lattice"].reshape(-1, 3, 3)
                job["frac_coords"] = job["frac_coords"].reshape(-1, 3)
        else:
            store = torch.load(path, weights_only=True)
    except (OSError, EOFError, ValueError, RuntimeError, KeyError, TypeError, AttributeError,
            pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a readable store of tools/sample_on_device.py ({err})") from None
    if not isinstance(store, dict) or store.get("format") != STORE_FORMAT or not isinstance(store.get("jobs"), dict):
        raise ValueError(f"{path} is not a store of tools/sample_on_device.py")
    return store


def save_store(store: dict, path: str | Path) -> None:
    """Write ``store`` atomically: text for ``*.json.gz``, tensors for ``*.pt``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if path.name.endswith(".json.gz"):
        jobs = {key: {name: (_to_text(v) if name in _ARRAYS else v) for name, v in job.items()}
                for key, job in store["jobs"].items()}
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as fh:
            json.dump({"format": store["format"], "jobs": jobs}, fh, separators=(",", ":"))
    else:
        torch.save(store, tmp)
    os.replace(tmp, path)


def job_key(model: str, num: int, seed: int, steps: int, conditions: dict | None, guidance_scale: float) -> str:
    """The store key of one request (what ``generate`` was asked for; the model by file name)."""
    cond = json.dumps(conditions or {}, sort_keys=True)
    return f"{Path(model).name}|n={num}|seed={seed}|steps={steps}|cond={cond}|g={float(guidance_scale):g}"


def job_batch(job: dict):
    """The crystals of one stored job as a CrystalBatch (ValueError for a job :func:`check_job` refuses)."""
    check_job(str(job.get("label", "?")) if isinstance(job, dict) else "?", job)
    return CrystalBatch(job["atom_types"], job["frac_coords"], job["lattice"], job["num_atoms"])


def job_by_label(store: str | Path | dict, label: str) -> tuple[str, dict]:
    """``(key, job)`` of the one job of a store labelled ``label`` (e.g. ``base_1000x100``); ``KeyError`` naming the
    labels it holds otherwise."""
    jobs = (store if isinstance(store, dict) else load_store(store))["jobs"]
    match = [k for k, v in jobs.items() if v.get("label") == label]
    if len(match) != 1:
        raise KeyError(f"the store holds {len(match)} jobs labelled {label!r} (labels: "
                       f"{[v.get('label') for v in jobs.values()]})")
    return match[0], jobs[match[0]]


class PresampledModel:
    """A store of samples drawn elsewhere, served through ``generate()`` like a model (``KeyError`` naming the
    request when the store does not hold it). ``model_name``: the file name of the model they came from."""

    def __init__(self, store: str | Path | dict, model_name: str):
        self.store = store if isinstance(store, dict) else load_store(store)
        if self.store.get("format") != STORE_FORMAT:
            raise ValueError(f"{store} is not a store of tools/sample_on_device.py")
        self.model_name = Path(model_name).name
        self.source = "" if isinstance(store, dict) else str(store)

    def batch(self, num: int, seed: int, steps: int, conditions: dict | None = None, guidance_scale: float = 0.0):
        key = job_key(self.model_name, num, seed, steps, conditions, guidance_scale)
        if key not in self.store["jobs"]:
            raise KeyError(f"the store holds no samples for {key}; draw them with tools/sample_on_device.py")
        return job_batch(self.store["jobs"][key])

    def generate(self, num: SamplingRequest | int, **fields):
        """The stored crystals of a request (a :class:`SamplingRequest` or ``num`` with its fields), by the kit's
        rules: γ defaults to 2.0 with conditions, steps to 1000 (the device draws' default). A field the store cannot
        honour (a formula, templates, an element restriction ...) is an error, never silently dropped; batch_size,
        progress and threads do not select stored samples."""
        request = SamplingRequest.from_kwargs(num, **fields)
        unsupported = [f.name for f in dataclass_fields(SamplingRequest)
                       if f.name not in _STORE_FIELDS and getattr(request, f.name) != f.default]
        if request.enforce_symmetry:
            raise ValueError("templated samples (enforce_symmetry) are drawn here, not on the device")
        if unsupported:
            raise ValueError(f"a store of samples drawn elsewhere cannot honour {', '.join(unsupported)}; sample "
                             "with the model itself")
        gamma = resolve_guidance_scale(request.guidance_scale, request.conditions)
        steps = request.steps if request.steps is not None else 1000
        return self.batch(request.num, request.seed if request.seed is not None else 0, steps, request.conditions,
                          gamma).to_structures()


#: the request fields that select stored samples (the rest must keep their defaults; batch_size, progress and
#: threads change nothing a store holds)
_STORE_FIELDS = ("num", "seed", "steps", "conditions", "guidance_scale", "batch_size", "progress", "threads")
