"""A pure-torch training recipe for a lent GPU: no Lightning, no pymatgen, the whole data set on the device.

Two steps, the first where mattergen_kit and its data are installed, the second anywhere torch is::

    python -m mattergen_kit.training.fast pack --out runs/pack/mp-bundled-20.pt      # train/val tensors
    python -m mattergen_kit.training.fast train --pack runs/pack/mp-bundled-20.pt --out runs/gpu     # on the GPU

The defaults are the recipe of the shipped bundled model (4.4M parameters, batch 1,024, 5.8 min on one H200 at
~21,000 crystals/s; its validation loss stopped improving after ~5 min, so longer runs need more data, not time).

The pack holds the canonical crystals as flat tensors (atom types, fractional coordinates, lattices,
atom counts) of the train and val splits, the number-of-atoms histogram and the lattice-prior density, so
the GPU machine needs torch and this package's ``data.crystal_batch``, ``diffusion`` and ``model``
modules only (they import no pymatgen).

One step of the loop is the same objective as the Lightning module (training/module.py):

    t ~ U[1e-5, 1];  (x_t, f_t, L_t) ~ q(· | x_0, f_0, L_0);   loss = L_types + 0.1 L_coords + L_lattice
    θ ← AdamW(θ, ∇ loss),  lr: linear warm-up then cosine to min_lr_ratio·lr over the time budget
    θ_EMA ← decay θ_EMA + (1 − decay) θ,  decay = min(ema_decay, (1 + step)/(10 + step))

Batches are gathered on the device from random crystal indices (no DataLoader, no host round trip); the
forward pass runs under bf16 autocast on CUDA. The EMA weights are validated every ``val_every_s`` seconds
on the whole val split with a fixed generator, and the best are written as a plain checkpoint
(``OUT/model.pt``, model/checkpoint.py) that ``load_model`` reads. ``OUT/state.pt`` (weights, EMA,
optimiser, step, elapsed time) is written at each validation: rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from mattergen_kit.conditioning.properties import NUM_ELEMENTS, PropertySpec
from mattergen_kit.constants import MAX_ATOMIC_NUM
from mattergen_kit.data.cell_choice import random_equivalent_cells
from mattergen_kit.data.crystal_batch import CrystalBatch
from mattergen_kit.model.denoiser import DenoiserConfig
from mattergen_kit.training.config import nest_model_keys

PACK_FORMAT = "mattergen_kit.training_pack"


# ---------------------------------------------------------------------------------------------- data pack
def pack_bundled(out: str | Path, limit_train: int | None = None, limit_val: int | None = None,
                 max_atoms: int = 20, conventional: bool = False) -> Path:
    """Write the bundled train/val splits as a training pack (needs the package's data layer); ``max_atoms=52``:
    the mp-bundled-52 set (cells up to 52 atoms, data/bundled_large.py). ``conventional``: also the train crystals'
    conventional cells with more atoms than the primitive one and ≤ max_atoms (data/cell_choice.py), as
    ``splits["train"]["conventional"]`` (flat tensors + ``source``, the index of the crystal each belongs to)."""
    from mattergen_kit.data.cell_choice import conventional_alternatives
    from mattergen_kit.datasets import load_bundled

    data = {name: load_bundled(name, max_atoms=max_atoms, progress=False) for name in ("train", "val")}
    splits = {name: _split_tensors(data[name], limit)[0]
              for name, limit in (("train", limit_train), ("val", limit_val))}
    if conventional:
        n_train = len(splits["train"]["num_atoms"])
        index, cells = conventional_alternatives(data["train"].structures[:n_train], max_atoms=max_atoms)
        if cells is not None:
            splits["train"]["conventional"] = {"atom_types": cells.atom_types, "frac_coords": cells.frac_coords,
                                               "lattice": cells.lattice, "num_atoms": cells.num_atoms,
                                               "source": torch.tensor(index, dtype=torch.long)}
    return _write_pack(out, splits, name=f"mp-bundled-{max_atoms}", max_atoms=max_atoms)


def _split_tensors(ds, limit: int | None) -> tuple[dict, CrystalBatch]:
    """The first ``limit`` crystals of a dataset as flat tensors (and the collated batch they came from)."""
    batch = CrystalBatch.collate([ds[i] for i in range(min(limit or len(ds), len(ds)))])
    return {"atom_types": batch.atom_types, "frac_coords": batch.frac_coords, "lattice": batch.lattice,
            "num_atoms": batch.num_atoms}, batch


def _write_pack(out: str | Path, splits: dict, **fields) -> Path:
    """Write a pack atomically: the splits, the number-of-atoms prior of the bundled train split and the mean
    density N/V of the train split (the lattice prior), plus ``fields``."""
    import numpy as np

    from mattergen_kit.datasets import num_atoms_histogram

    train = splits["train"]
    hist = np.asarray(num_atoms_histogram("train", max_atoms=fields.get("max_atoms", 20)), dtype=float)
    density = float((train["num_atoms"].double() / torch.linalg.det(train["lattice"].double()).abs()).mean())
    pack = {"format": PACK_FORMAT, "version": 1, "splits": splits, "num_atoms_histogram": [float(p) for p in hist],
            "density": density, **fields}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(pack, tmp)
    os.replace(tmp, out)
    return out


def pack_conditioned(out: str | Path, config: str | Path = "configs/conditioned_cpu.yaml",
                     limit_train: int | None = None, limit_val: int | None = None) -> Path:
    """Write the labelled training set of a conditioned config (bundled splits + ``extra_train``, labels from
    datasets/labels/) as a pack: crystals, encoded labels per property and the fitted property specs.

    Label tensors (one row per crystal; absent = the property's null embedding):
    chemical_system (N, 76) uint8 multi-hot, zero row if absent; categorical (N,) long index, −1 if absent;
    scalars (N,) raw value, NaN if absent (normalised on the device by PropertySpec.encode)."""
    import numpy as np

    from mattergen_kit.conditioning import batch_conditions, fit_property_specs
    from mattergen_kit.training.config import TrainConfig
    from mattergen_kit.training.module import CrystalDataModule

    config = TrainConfig.from_yaml(config)
    datamodule = CrystalDataModule(config)
    datamodule.setup("fit")
    specs = fit_property_specs(config.properties, datamodule.train_set)
    splits = {}
    for name, ds, limit in (("train", datamodule.train_set, limit_train), ("val", datamodule.val_set, limit_val)):
        tensors, batch = _split_tensors(ds, limit)
        labels = batch_conditions(batch, config.properties)
        encoded = {}
        for spec in specs:
            if spec.kind == "scalar":
                values = torch.as_tensor(np.asarray([float("nan") if v is None else float(v)
                                                     for v in _as_values(labels[spec.name])]), dtype=torch.float32)
                encoded[spec.name] = values
            else:
                enc, present = spec.encode(labels[spec.name], len(batch.num_atoms))
                encoded[spec.name] = ((enc * present[:, None]).to(torch.uint8) if enc.ndim == 2   # multi-hot: 1 byte
                                     else torch.where(present, enc, -1))
        splits[name] = {**tensors, "conditions": encoded}
    train = splits["train"]["conditions"]
    counts = {n: int((v.sum(-1) > 0).sum() if v.ndim == 2 else (v >= 0).sum() if not v.is_floating_point()
                     else torch.isfinite(v).sum()) for n, v in train.items()}
    # the number-of-atoms prior stays the base's (the bundled train split), as _write_pack gives it
    return _write_pack(out, splits, name=f"conditioned:{Path(config.run_dir).name}",
                       properties=[s.to_dict() for s in specs], adapter_dim=config.adapter_dim,
                       condition_dropout=config.condition_dropout,
                       condition_dropout_mode=config.condition_dropout_mode, labelled_counts=counts,
                       extra_train=list(config.extra_train or []), source_config=str(config.to_dict()))


def _as_values(values):
    return values.tolist() if torch.is_tensor(values) else list(values)


class PackError(ValueError):
    """A training pack that cannot be used (missing, empty, truncated, foreign or tampered); the message names the
    file, what is wrong and how to write it again."""


def _write_again(path: Path) -> str:
    return (f"write it again with `python -m mattergen_kit.training.fast pack --out {path}` (add --conditioned CONFIG "
            "for a conditioned pack, --max-atoms 52 for the 52-atom set)")


def load_pack(path: str | Path) -> dict:
    """The training pack at ``path``, checked before anything trains on it (PackError otherwise).

    No code from the file runs: a pack holds tensors, numbers, strings, lists and dicts only, so the pickle's
    globals are listed first without unpickling (``get_unsafe_globals_in_checkpoint`` reads the opcodes) and any
    one named is refused; the read itself is ``torch.load(weights_only=True)``. Then every field train_fast uses is
    checked (:func:`check_pack`): shapes that agree, finite coordinates and lattices with a volume, atom counts ≥ 1,
    atomic numbers 1..100, labels that fit their properties."""
    path = Path(path)
    again = _write_again(path)
    if not path.is_file():
        raise PackError(f"training pack {path} does not exist{' (it is a folder)' if path.is_dir() else ''}: "
                        f"{again}")
    if path.stat().st_size == 0:
        raise PackError(f"training pack {path} is empty (0 bytes: an interrupted copy?): {again}")
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - any failure to parse the zip/pickle means the same thing to the user
        raise PackError(f"training pack {path} is truncated or not a PyTorch file ({type(err).__name__}): "
                        f"{again}") from None
    if named:
        raise PackError(f"training pack {path} names objects that could run code when unpickled "
                        f"({', '.join(sorted(named))}); a pack written by `pack` holds none, so it was refused "
                        f"without unpickling it. Delete it if you did not put it there, and {again}")
    try:
        pack = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a torn file that passed the opcode scan
        raise PackError(f"training pack {path} could not be read ({type(err).__name__}: {str(err).strip()[:160]}): "
                        f"it is truncated or corrupted; {again}") from None
    if not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT:
        raise PackError(f"{path} is not a mattergen_kit training pack (a {type(pack).__name__}"
                        f"{' of format ' + repr(pack.get('format')) if isinstance(pack, dict) else ''}): {again}")
    problem = check_pack(pack)
    if problem:
        raise PackError(f"training pack {path} is damaged or was edited: {problem}; {again}")
    return pack


def check_pack(pack: dict) -> str | None:
    """What is wrong with a pack's contents, in a few words (None if nothing is)."""
    if pack.get("version") != 1:
        return f"version {pack.get('version')!r} (this kit reads version 1)"
    density, hist = pack.get("density"), pack.get("num_atoms_histogram")
    if not _number(density) or not math.isfinite(density) or density <= 0:
        return f"density {density!r} is not a positive number (atoms/Å³)"
    if (not isinstance(hist, list) or len(hist) < 2 or not all(_number(p) and math.isfinite(p) and p >= 0 for p in hist)
            or sum(hist) <= 0):
        return "num_atoms_histogram is not a list of non-negative numbers with a positive sum"
    splits = pack.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(splits.get(s), dict) for s in ("train", "val")):
        return "no train and val splits"
    specs = pack.get("properties")
    if specs is not None:
        if not isinstance(specs, list) or not all(isinstance(d, dict) for d in specs):
            return "properties is not a list of property specs"
        try:
            specs = [PropertySpec.from_dict(d) for d in specs]
        except (TypeError, ValueError) as err:
            return f"a property spec cannot be read ({err})"
    for name in ("train", "val"):
        split = splits[name]
        problem = _check_crystals(split)
        if problem is None and split.get("conventional") is not None:
            alt = split["conventional"]
            problem = _check_crystals(alt) if isinstance(alt, dict) else "conventional is not a mapping"
            source = alt.get("source") if problem is None else None
            if problem is None and not (_integer_tensor(source, 1) and len(source) == len(alt["num_atoms"])
                                        and bool(((source >= 0) & (source < len(split["num_atoms"]))).all())):
                problem = "conventional.source is not one index of a crystal of the split per conventional cell"
            problem = problem and f"conventional cells: {problem}"
        if problem is None:
            problem = _check_labels(split.get("conditions"), specs, len(split["num_atoms"]))
        if problem:
            return f"{name} split: {problem}"
    return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer_tensor(value, ndim: int) -> bool:
    return torch.is_tensor(value) and value.ndim == ndim and not value.is_floating_point() and not value.is_complex()


def _check_crystals(split: dict) -> str | None:
    """The flat crystal tensors of one split: num_atoms (B,) ≥ 1, atom_types (ΣN,) in 1..100, frac_coords (ΣN, 3)
    and lattice (B, 3, 3) finite, every cell with a volume |det L| > 0."""
    missing = [k for k in ("atom_types", "frac_coords", "lattice", "num_atoms") if not torch.is_tensor(split.get(k))]
    if missing:
        return f"no {', '.join(missing)} tensor"
    types, coords, lattice, counts = (split[k] for k in ("atom_types", "frac_coords", "lattice", "num_atoms"))
    if not _integer_tensor(counts, 1) or len(counts) == 0:
        return f"num_atoms must be a non-empty 1-D integer tensor (got {counts.dtype} of shape {tuple(counts.shape)})"
    if bool((counts < 1).any()):
        return f"atom counts below 1 (num_atoms holds {int(counts.min())})"
    total = int(counts.sum())
    if not _integer_tensor(types, 1) or len(types) != total:
        return f"atom_types must be 1-D integers, one per atom ({total} by num_atoms; got {tuple(types.shape)})"
    if bool(((types < 1) | (types > MAX_ATOMIC_NUM)).any()):
        return f"atomic numbers outside 1..{MAX_ATOMIC_NUM}"
    if not coords.is_floating_point() or tuple(coords.shape) != (total, 3):
        return f"frac_coords must be floats of shape ({total}, 3) (got {coords.dtype} {tuple(coords.shape)})"
    if not lattice.is_floating_point() or tuple(lattice.shape) != (len(counts), 3, 3):
        return f"lattice must be floats of shape ({len(counts)}, 3, 3) (got {lattice.dtype} {tuple(lattice.shape)})"
    if not (bool(torch.isfinite(coords).all()) and bool(torch.isfinite(lattice).all())):
        return "non-finite (NaN or inf) coordinates or lattices"
    if bool((torch.linalg.det(lattice.double()).abs() < 1e-6).any()):
        return "cells without a volume (|det L| = 0)"
    return None


def _check_labels(conditions, specs, size: int) -> str | None:
    """Encoded labels (pack_conditioned): one row per crystal and property; multi-hot rows (size, 76) of 0/1,
    category indices in −1..len(categories)−1, scalars finite or NaN (absent)."""
    if conditions is None:
        return None if specs is None else "the pack has properties but no condition labels"
    if specs is None or not isinstance(conditions, dict):
        return "condition labels without properties (or not a mapping)"
    if sorted(conditions) != sorted(s.name for s in specs):
        return f"labels for {sorted(conditions)} but properties {sorted(s.name for s in specs)}"
    for spec in specs:
        value = conditions[spec.name]
        if not torch.is_tensor(value) or value.ndim == 0 or len(value) != size:
            return f"labels of {spec.name} are not one row per crystal ({size})"
        if spec.kind == "chemical_system":
            ok = (value.ndim == 2 and value.shape[1] == NUM_ELEMENTS and not value.is_floating_point()
                  and bool(((value == 0) | (value == 1)).all()))
        elif spec.kind == "categorical":
            ok = (_integer_tensor(value, 1) and bool(((value >= -1) & (value < len(spec.categories))).all()))
        else:
            ok = value.ndim == 1 and value.is_floating_point() and not bool(torch.isinf(value).any())
        if not ok:
            return f"labels of {spec.name} ({spec.kind}) do not fit it ({value.dtype} {tuple(value.shape)})"
    return None


def select_properties(pack: dict, names: list[str]) -> dict:
    """The pack with only the labels (and specs) of ``names``: a per-property fine-tune from a shared pack."""
    have = [d["name"] for d in pack.get("properties", [])]
    unknown = [n for n in names if n not in have]
    if not have or unknown:
        raise ValueError(f"the pack has no labels for {unknown or names}; it has {have or 'none (not conditioned)'}")
    out = dict(pack, properties=[d for d in pack["properties"] if d["name"] in names],
               labelled_counts={k: v for k, v in (pack.get("labelled_counts") or {}).items() if k in names})
    out["splits"] = {split: dict(tensors, conditions={k: v for k, v in tensors["conditions"].items() if k in names})
                     for split, tensors in pack["splits"].items()}
    return out


class DeviceCrystals:
    """One split of a pack held on the device; ``batch(indices)`` gathers crystals into a CrystalBatch."""

    def __init__(self, split: dict, device: torch.device):
        self.size = len(split["num_atoms"])
        alt = split.get("conventional")  # conventional cells stored after the primitive ones (pack --conventional)
        parts = [split] + ([alt] if alt is not None else [])
        self.atom_types = torch.cat([p["atom_types"] for p in parts]).to(device)
        self.frac_coords = torch.cat([p["frac_coords"] for p in parts]).to(device)
        self.lattice = torch.cat([p["lattice"] for p in parts]).to(device)
        self.num_atoms = torch.cat([p["num_atoms"] for p in parts]).to(device)
        self.first_atom = torch.cumsum(self.num_atoms, 0) - self.num_atoms
        self.alternative = torch.full((self.size,), -1, dtype=torch.long, device=device)  # index of its conventional
        if alt is not None:
            self.alternative[alt["source"].to(device)] = self.size + torch.arange(len(alt["num_atoms"]), device=device)
        self.conditions = {k: v.to(device) for k, v in split.get("conditions", {}).items()}
        self.device = device

    def __len__(self) -> int:
        return self.size

    def conventional(self, idx: torch.Tensor, probability: float, generator: torch.Generator | None = None):
        """``idx`` with each crystal that has a conventional cell swapped to it with probability ``probability``."""
        alt = self.alternative[idx]
        swap = (torch.rand(len(idx), device=idx.device, generator=generator) < probability) & (alt >= 0)
        return torch.where(swap, alt, idx)

    def batch(self, idx: torch.Tensor) -> CrystalBatch:
        n = self.num_atoms[idx]
        starts = torch.repeat_interleave(self.first_atom[idx], n)
        rank = torch.arange(int(n.sum()), device=self.device) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
        atoms = starts + rank
        return CrystalBatch(self.atom_types[atoms], self.frac_coords[atoms], self.lattice[idx], n)

    def labels(self, idx: torch.Tensor, dropout: float = 0.0, mode: str = "subsets",
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor] | None:
        """The encoded labels of crystals ``idx``, with condition dropout p (conditioning/conditions.py):
        a dropped label becomes absent (zero multi-hot row, index −1, NaN) and so gets the null embedding."""
        if not self.conditions:
            return None
        out = {k: v[idx] for k, v in self.conditions.items()}
        if dropout <= 0:
            return out
        from mattergen_kit.conditioning.conditions import drop_conditions

        flags = drop_conditions({k: torch.ones(len(idx), device=self.device) for k in out}, dropout,
                                generator=generator, mode=mode)
        for k, v in out.items():
            keep = ~torch.isnan(flags[k])
            if v.ndim == 2:
                out[k] = v * keep[:, None]
            elif v.is_floating_point():
                out[k] = torch.where(keep, v, torch.full_like(v, float("nan")))
            else:
                out[k] = torch.where(keep, v, torch.full_like(v, -1))
        return out


# ---------------------------------------------------------------------------------------------- training
def shipped_model_shape(**changes) -> DenoiserConfig:
    """The network of the shipped bundled model (4.4M parameters), FastConfig's default ``model``, with ``changes``
    (``shipped_model_shape(hidden_dim=32, num_layers=2)``: a small net with the same optional parts)."""
    return replace(DenoiserConfig(hidden_dim=256, num_layers=6, crystal_summary=True, composition_logits=True),
                   **changes)


#: FastConfig's flat network keys before the ``model`` field (the shipped checkpoints' meta.train_config has
#: them; the command line keeps --hidden/--layers/--crystal-summary/--composition-logits/--graph)
FLAT_MODEL_KEYS = {"hidden": "hidden_dim", "layers": "num_layers", "crystal_summary": "crystal_summary",
                   "composition_logits": "composition_logits", "graph": "graph"}
#: keys train_fast adds to meta.train_config beside FastConfig's (a record, not settings)
RECORDED_KEYS = ("recipe", "condition_dropout", "condition_dropout_mode", "extra_train")


@dataclass
class FastConfig:
    pack: str
    out: str = "runs/gpu"
    minutes: float = 5.8
    # the network (model/denoiser.py); with init_from the checkpoint's architecture replaces it, except a
    # model.graph other than "all" (the weights fit both graphs)
    model: DenoiserConfig = field(default_factory=shipped_model_shape)
    init_from: str | None = None     # a plain checkpoint to start from
    properties: str | None = None    # conditioned packs: train on this comma-separated subset of the pack's properties
    batch_size: int = 1024
    lr: float = 1e-3
    warmup_steps: int = 300
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    val_every_s: float = 30.0
    seed: int = 0
    device: str = "cuda"
    bf16: bool = True
    max_steps: int | None = None  # a step budget: the schedule then follows steps, not time (``minutes`` still caps)
    weight_decay: float = 0.01  # AdamW's (torch's default, the shipped recipe's)
    cell_augment: float = 0.0  # probability of showing a crystal in a random equivalent cell (data/cell_choice.py)
    conventional: float = 0.0  # probability of showing it in its conventional cell (a pack made with --conventional)
    weights_dtype: str = "float32"  # storage of OUT/model.pt ("float16": half the size; load upcasts)

    def __post_init__(self) -> None:
        if not isinstance(self.model, DenoiserConfig):
            self.model = DenoiserConfig.from_dict(self.model)

    @classmethod
    def from_dict(cls, values: dict, warn: bool = True) -> "FastConfig":
        """From a mapping of FastConfig keys, e.g. a checkpoint's ``meta["train_config"]`` (the keys train_fast
        records beside the settings are skipped). The flat network keys of older runs (``hidden``, ``layers``,
        ``crystal_summary``, ``composition_logits``, ``graph``) are read as ``model.*``; ``warn=False`` for
        dicts stored in checkpoints."""
        values = nest_model_keys({k: v for k, v in values.items() if k not in RECORDED_KEYS}, FLAT_MODEL_KEYS,
                                 "FastConfig", warn=warn)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FastConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def train_fast(cfg: FastConfig, log=print, on_step=None) -> Path:
    """Train until ``cfg.minutes`` (or ``cfg.max_steps``); returns the plain checkpoint of the best EMA.
    ``on_step(step, lr)`` is called after each optimiser step (progress hooks, tests)."""
    import copy

    from mattergen_kit.model import CrystalDenoiser, count_parameters
    from mattergen_kit.model.checkpoint import SAMPLING_META, diffusion_from_config, save_checkpoint
    from mattergen_kit.training.schedule import ema_update, warmup_cosine

    device = torch.device(cfg.device)
    pack = load_pack(cfg.pack)
    if cfg.properties:
        pack = select_properties(pack, [p.strip() for p in cfg.properties.split(",") if p.strip()])
    train, val = DeviceCrystals(pack["splits"]["train"], device), DeviceCrystals(pack["splits"]["val"], device)
    diffusion_config = {"density": pack["density"]}
    diffusion = diffusion_from_config(diffusion_config)
    model_config = asdict(cfg.model)
    init = None
    if cfg.init_from:
        from mattergen_kit.model.checkpoint import load_checkpoint

        init = load_checkpoint(cfg.init_from)
        model_config = dict(init["model_config"])
        diffusion_config = dict(init.get("diffusion_config") or diffusion_config)
        diffusion = diffusion_from_config(diffusion_config)
    if cfg.model.graph != "all":
        model_config["graph"] = cfg.model.graph
    torch.manual_seed(cfg.seed)
    model = CrystalDenoiser(**model_config)
    if init is not None:
        model.load_state_dict(init["state_dict"])
    if "properties" in pack:  # conditioned: a fresh zero-initialised adapter (the run starts equal to the base)
        from mattergen_kit.conditioning.adapter import attach_adapter
        from mattergen_kit.conditioning.properties import PropertySpec

        attach_adapter(model, [PropertySpec.from_dict(d) for d in pack["properties"]], pack.get("adapter_dim"))
    model = model.to(device)
    dropout, dropout_mode = pack.get("condition_dropout", 0.0), pack.get("condition_dropout_mode", "subsets")
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, best_path = out / "state.pt", out / "model.pt"
    step, elapsed, best = 0, 0.0, math.inf
    if state_path.exists():
        try:
            state = torch.load(state_path, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            step, elapsed, best = int(state["step"]), float(state["elapsed"]), float(state["best"])
        except Exception as err:  # noqa: BLE001 - torn, foreign, or another network's state: one answer
            raise ValueError(f"cannot resume from {state_path} ({type(err).__name__}: {str(err).strip()[:160]}): it "
                             "is damaged or was written by a run with other model settings; delete it to start "
                             "this run again, or give another --out") from None
        log(f"resumed from {state_path} at step {step} ({elapsed / 60:.1f} min, best val {best:.4f})")
    budget = 60.0 * cfg.minutes
    log(f"{count_parameters(model):,} parameters; {len(train)} train / {len(val)} val crystals on {device}; "
        f"budget {cfg.minutes} min")
    gen = torch.Generator(device=device).manual_seed(cfg.seed + step)

    def validate() -> dict:
        vgen = torch.Generator(device=device).manual_seed(12345)
        totals, count = {}, 0
        with torch.no_grad():
            for start in range(0, len(val), cfg.batch_size):
                idx = torch.arange(start, min(start + cfg.batch_size, len(val)), device=device)
                losses = diffusion.training_losses(ema, val.batch(idx), generator=vgen, conditions=val.labels(idx))
                for k, v in losses.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * len(idx)
                count += len(idx)
        return {k: v / count for k, v in totals.items()}

    def save(val_metrics: dict | None) -> None:
        nonlocal best
        if val_metrics is not None and val_metrics["loss"] < best:
            best = val_metrics["loss"]
            meta = {"num_atoms_histogram": pack["num_atoms_histogram"], "global_step": step,
                    "pack": pack.get("name"), **({"adapter": ema.adapter.config_dict(),
                                                  "labelled_counts": pack.get("labelled_counts")}
                                                 if ema.adapter is not None else {}),
                    "train_config": {"recipe": "training/fast.py",   # the model trained, init_from's included
                                     **asdict(replace(cfg, model=DenoiserConfig.from_dict(model_config))),
                                     **({"condition_dropout": dropout, "condition_dropout_mode": dropout_mode,
                                         "extra_train": pack.get("extra_train", [])} if "properties" in pack else {})},
                    "val_metrics": {f"val/{k}": v for k, v in val_metrics.items()},
                    **({k: init["meta"][k] for k in SAMPLING_META if k in init.get("meta", {})} if init else {}),
                    "wall_minutes": elapsed / 60, "device": torch.cuda.get_device_name(device)
                    if device.type == "cuda" else "cpu", "torch": torch.__version__}
            save_checkpoint(best_path, ema.config_dict(), ema.state_dict(), diffusion_config, meta,
                            weights_dtype=cfg.weights_dtype)
        tmp = state_path.with_name("state.pt.tmp")
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed, "best": best}, tmp)
        os.replace(tmp, state_path)

    use_bf16 = cfg.bf16 and (device.type == "cuda" or os.environ.get("MATTERGEN_KIT_CPU_BF16") == "1")
    last_val, t0, seen = elapsed, time.perf_counter() - elapsed, 0
    while elapsed < budget and (cfg.max_steps is None or step < cfg.max_steps):
        progress = step / cfg.max_steps if cfg.max_steps else elapsed / budget
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(step, cfg.warmup_steps, progress, cfg.min_lr_ratio)
        idx = torch.randint(0, len(train), (cfg.batch_size,), device=device, generator=gen)
        batch = train.batch(train.conventional(idx, cfg.conventional, gen) if cfg.conventional > 0 else idx)
        if cfg.cell_augment > 0:
            batch = random_equivalent_cells(batch, cfg.cell_augment, generator=gen)
        conditions = train.labels(idx, dropout, dropout_mode, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            losses = diffusion.training_losses(model, batch, generator=gen, conditions=conditions)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, step, cfg.ema_decay)
        if on_step is not None:
            on_step(step, opt.param_groups[0]["lr"])
        step += 1
        seen += cfg.batch_size
        elapsed = time.perf_counter() - t0
        if elapsed - last_val >= cfg.val_every_s:
            metrics = validate()
            save(metrics)
            log(f"step {step:>7} {elapsed / 60:6.2f} min  {seen / max(elapsed - last_val, 1e-9):8.0f} crystals/s  "
                f"lr {opt.param_groups[0]['lr']:.2e}  train {float(losses['loss'].detach()):.4f}  val {metrics['loss']:.4f} "
                f"(types {metrics['loss_types']:.4f}, coords {metrics['loss_coords']:.3f}, lattice "
                f"{metrics['loss_lattice']:.4f})  best {best:.4f}")
            last_val, seen = time.perf_counter() - t0, 0   # the rate excludes validation time
    metrics = validate()
    save(metrics)
    log(f"done: step {step}, {elapsed / 60:.2f} min, final val {metrics['loss']:.4f}, best {best:.4f} → {best_path}")
    return best_path


def _bool_flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mattergen_kit.training.fast", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="write the bundled train/val splits as a training pack")
    pk.add_argument("--out", required=True)
    pk.add_argument("--limit-train", type=int)
    pk.add_argument("--limit-val", type=int)
    pk.add_argument("--max-atoms", type=int, default=20, choices=(20, 52),
                    help="20: mp-bundled-20 (default); 52: mp-bundled-52, cells up to 52 atoms")
    pk.add_argument("--conventional", action="store_true",
                    help="also store the train crystals' conventional cells (for train --conventional P)")
    pk.add_argument("--conditioned", metavar="CONFIG", nargs="?", const="configs/conditioned_cpu.yaml",
                    help="also pack the labels of this conditioned config (default configs/conditioned_cpu.yaml)")
    tr = sub.add_parser("train", help="train from a pack (rerun the same command to resume)")
    defaults = FastConfig(pack="")
    old_flag = {new: old for old, new in FLAT_MODEL_KEYS.items() if old != new}  # --hidden, --layers still work
    settings = [(name, value) for name, value in asdict(defaults).items() if name != "model"]
    settings += [(f"model.{name}", value) for name, value in asdict(defaults.model).items()]
    for name, value in settings:
        flags = [f"--{name.removeprefix('model.').replace('_', '-')}"]
        flags += [f"--{old_flag[name[6:]]}"] if name[6:] in old_flag else []
        about = f"the network's {name} (default {value})" if name.startswith("model.") else None
        if name == "pack":
            tr.add_argument("--pack", required=True)
        elif isinstance(value, bool):
            tr.add_argument(*flags, dest=name, type=_bool_flag, default=value, metavar="BOOL", help=about)
        else:
            kind = int if name == "max_steps" else str if value is None else type(value)
            tr.add_argument(*flags, dest=name, type=kind, default=value, help=about,
                            metavar=name.removeprefix("model.").upper())
    args = vars(p.parse_args(argv))
    command = args.pop("command")
    if command == "pack":
        path = (pack_conditioned(args["out"], args["conditioned"], args["limit_train"], args["limit_val"])
                if args["conditioned"] else pack_bundled(args["out"], args["limit_train"], args["limit_val"],
                                                         args["max_atoms"], args["conventional"]))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    try:
        model = {name[6:]: args.pop(name) for name in list(args) if name.startswith("model.")}
        train_fast(FastConfig(**args, model=DenoiserConfig.from_dict(model)), log=lambda msg: print(msg, flush=True))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
