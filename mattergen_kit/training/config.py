"""TrainConfig: every knob of a training run, readable in one screen, loadable from a short YAML.

Choices (measured on the bundled set on 2 CPU cores, see benchmarks/bench_model_sizes.py):
- AdamW, lr 5e-4, 200 warm-up steps then cosine to 0.1·lr over the budget (max_steps / max_epochs, or
  max_time_minutes when that ends first: the schedule follows whichever budget is used up fastest). MatterGen's Adam 1e-4 + ReduceLROnPlateau
  (ref §10.2) is tuned for ~10^5 steps on 8 GPUs; with a CPU budget of ~10^4 steps a larger lr with a
  schedule that ends in a low lr trains faster. "plateau" (MatterGen-style, on val/loss) and "constant"
  are available.
- gradient clipping by global norm 1.0 (MatterGen clips by value 0.5; by norm keeps the direction and is
  the safer default for a small net; set grad_clip_algorithm: value, grad_clip: 0.5 to follow MatterGen).
- EMA of the weights (decay 0.999, with warm-up min(decay, (1+step)/(10+step))): used for validation and
  exported for sampling. MatterGen has none; on short runs it smooths the noisy last steps.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mattergen_kit.model.checkpoint import load_checkpoint
from mattergen_kit.model.denoiser import DenoiserConfig


EXTRA_TRAIN_SETS = ("aflow_bulk_modulus",)  # training/module.py: load_datasets

#: TrainConfig's flat network keys before the ``model:`` section (configs and Lightning checkpoints written
#: before 2026-12 have them): each is read as ``model.<same name>`` with a DeprecationWarning
FLAT_MODEL_KEYS = {name: name for name in DenoiserConfig.__dataclass_fields__}


def nest_model_keys(values: dict, renames: dict[str, str], owner: str, source: str = "",
                    warn: bool = True, override: bool = False) -> dict:
    """``values`` with the old flat network keys moved into the ``model`` mapping (``renames``: old key → the
    DenoiserConfig field it now is). ``warn``: a DeprecationWarning naming the new key (configs a user can edit;
    not for the meta of checkpoints already written). A flat key and ``model.<key>`` that disagree are an error,
    unless ``override`` (command-line overrides win over the file)."""
    values = dict(values)
    model = values.get("model")
    model = asdict(model) if isinstance(model, DenoiserConfig) else {} if model is None else model
    if not isinstance(model, dict):
        raise ValueError(f"{source or owner}: model must be a mapping of DenoiserConfig keys "
                         f"{list(DenoiserConfig.__dataclass_fields__)}, got {type(model).__name__}")
    model = dict(model)
    moved = {old: new for old, new in renames.items() if old in values}
    for old, new in moved.items():
        value = values.pop(old)
        if not override and new in model and model[new] != value:
            raise ValueError(f"{source or owner}: {old}={value!r} and model.{new}={model[new]!r} disagree; "
                             f"keep only model.{new}")
        model[new] = value
    if moved and warn:
        text = {new: str(model[new]).lower() if isinstance(model[new], bool) else model[new] for new in moved.values()}
        how = (" ".join(f"--set model.{new}={v}" for new, v in text.items()) if override
               else "model:\n" + "".join(f"  {new}: {v}\n" for new, v in text.items()))
        warnings.warn(f"{source + ': ' if source else ''}flat {owner} keys are deprecated: "
                      f"{', '.join(f'{old} is now model.{new}' for old, new in moved.items())}; write\n{how}",
                      DeprecationWarning, stacklevel=3)
    if model or "model" in values:
        values["model"] = model
    return values


def apply_overrides(values: dict, overrides: dict, renames: dict[str, str], owner: str) -> dict:
    """``values`` (already nested) with ``overrides`` on top: ``section.key`` sets one key of a mapping
    (``model.hidden_dim=64``, ``diffusion.density=0.06``), a mapping for ``model``/``diffusion`` is merged
    into the file's, an old flat network key is read as ``model.<key>`` (DeprecationWarning). None = not set."""
    nested: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, dot, sub = key.partition(".")
        if dot:
            nested.setdefault(section, {})[sub] = value
        elif isinstance(value, dict) and isinstance(nested.get(key), dict):
            nested[key].update(value)
        else:
            nested[key] = value
    nested = nest_model_keys(nested, renames, owner, "override", override=True)
    out = dict(values)
    for key, value in nested.items():
        if isinstance(value, dict) and isinstance(out.get(key), (dict, DenoiserConfig)):
            base = asdict(out[key]) if isinstance(out[key], DenoiserConfig) else out[key]
            out[key] = {**base, **value}
        else:
            out[key] = value
    return out


@dataclass
class TrainConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    # the network (CrystalDenoiser): hidden_dim, num_layers, num_freqs, crystal_summary, composition_logits, ...
    # (model/denoiser.py DenoiserConfig; in YAML a 'model:' section)
    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    # diffusion: keyword arguments of CrystalDiffusion (empty = the reference defaults)
    diffusion: dict = field(default_factory=dict)
    # data
    dataset: str = "bundled"        # bundled | mp20 (after `fetch-data mp20`) | alexandria | csv | cif
    data_path: Any = None           # alexandria: dump file(s); csv: train CSV; cif: folder/zip
    val_path: str | None = None     # csv/cif: a separate val set; otherwise val_fraction of data_path
    val_fraction: float = 0.05      # held out by a fixed hash of material_id (alexandria, csv/cif without val_path)
    max_atoms: int = 20             # crystals with more sites are skipped (alexandria, extra_train)
    # labelled bundled sets appended to the train/val splits (crystals with <= max_atoms sites), e.g. the AFLOW
    # set whose DFT bulk moduli give the conditioned model ~3,000 bulk-modulus labels: [aflow_bulk_modulus]
    extra_train: list = field(default_factory=list)
    batch_size: int = 64
    num_workers: int = 0
    limit_train: int | None = None  # use only the first n training crystals (tests, overfitting)
    limit_val: int | None = None
    # optimisation
    lr: float = 5e-4
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | plateau | constant
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_clip_algorithm: str = "norm"  # norm | value
    ema_decay: float = 0.999
    # budget and bookkeeping
    max_epochs: int = 100
    max_steps: int = -1
    max_time_minutes: float | None = None
    val_every_n_epochs: int = 1
    ckpt_every_n_steps: int = 200
    log_every_n_steps: int = 20
    progress_bar: bool = True
    # hardware (passed to lightning.Trainer)
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    # start from the weights of a plain checkpoint (continue the bundled model in a new run, or fine-tune);
    # its model config must match model (the optional zero-initialised parts may be switched on here)
    init_from: str | None = None
    # take the whole model section and the diffusion settings from init_from's checkpoint
    # (a fine-tune that is re-run unchanged whenever the base model changes)
    model_from_init: bool = False
    # property conditioning (mattergen_kit/conditioning): names from the registry, labels dropped
    # with probability condition_dropout (mode: conditioning/conditions.py); adapter MLP width (None = model.hidden_dim)
    properties: list = field(default_factory=list)
    condition_dropout: float = 0.2
    condition_dropout_mode: str = "subsets"  # subsets | independent (conditioning/conditions.py says why)
    adapter_dim: int | None = None
    num_threads: int | None = None  # torch.set_num_threads; 1 is fastest when the 2 CPU cores are shared

    def __post_init__(self) -> None:
        if not isinstance(self.model, DenoiserConfig):
            self.model = DenoiserConfig.from_dict(self.model)
        for f in fields(self):  # YAML reads "1e-4" as a string (YAML 1.1 wants "1.0e-4"): accept both
            value = getattr(self, f.name)
            if isinstance(value, str) and str(f.type).split(" |")[0] in ("float", "int"):
                try:
                    setattr(self, f.name, (float if str(f.type).startswith("float") else int)(value))
                except ValueError:
                    raise ValueError(f"{f.name} must be a number, got {value!r}") from None
        if self.lr_schedule not in ("cosine", "plateau", "constant"):
            raise ValueError(f"lr_schedule must be cosine, plateau or constant (got {self.lr_schedule!r})")
        if self.dataset not in ("bundled", "mp20", "alexandria", "csv", "cif"):
            raise ValueError(f"dataset must be bundled, mp20, alexandria, csv or cif (got {self.dataset!r})")
        if self.dataset in ("alexandria", "csv", "cif") and not self.data_path:
            raise ValueError(f"dataset {self.dataset!r} needs data_path (the file(s) or folder to read)")
        unknown_extra = sorted(set(self.extra_train) - set(EXTRA_TRAIN_SETS))
        if unknown_extra:
            raise ValueError(f"extra_train: unknown sets {unknown_extra} (known: {list(EXTRA_TRAIN_SETS)})")
        if self.grad_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"grad_clip_algorithm must be norm or value (got {self.grad_clip_algorithm!r})")
        if not 0.0 <= float(self.condition_dropout) <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1] (got {self.condition_dropout!r})")
        if self.condition_dropout_mode not in ("subsets", "independent"):
            raise ValueError(f"condition_dropout_mode must be subsets or independent (got {self.condition_dropout_mode!r})")
        if self.model_from_init and not self.init_from:
            raise ValueError("model_from_init needs init_from (the checkpoint whose architecture to take)")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0 (got {self.lr!r})")
        for key in ("init_from", "val_path") + (("data_path",) if isinstance(self.data_path, str) else ()):
            value = getattr(self, key)
            if value and not Path(value).exists():
                raise FileNotFoundError(f"{key}: {value} does not exist")

    @property
    def model_config(self) -> dict:
        """``CrystalDenoiser(**config.model_config)``: the model section as a plain dict."""
        return asdict(self.model)

    def with_model_from_init(self) -> "TrainConfig":
        """With ``model_from_init``: a copy whose architecture and diffusion settings are init_from's."""
        if not self.model_from_init:
            return self
        ckpt = load_checkpoint(self.init_from)
        return replace(self, model=DenoiserConfig.from_dict(ckpt["model_config"]),
                       diffusion=dict(ckpt["diffusion_config"]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, warn: bool = True, source: str = "") -> "TrainConfig":
        """From a mapping of TrainConfig keys (a YAML file, a Lightning checkpoint's hyper-parameters). The flat
        network keys of older configs (``hidden_dim: 128``) are read as ``model.hidden_dim``; ``warn=False``
        for dicts stored in checkpoints (nothing for the user to edit)."""
        if not isinstance(values, dict):
            raise ValueError(f"{source or 'TrainConfig'}: expected a mapping of TrainConfig keys, "
                             f"got {type(values).__name__}")
        values = nest_model_keys(values, FLAT_MODEL_KEYS, "TrainConfig", source, warn)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)} "
                             f"(the network's under model: {list(DenoiserConfig.__dataclass_fields__)})")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a YAML config; ``overrides`` (None = not set) win over the file: ``model.hidden_dim=64`` or
        ``**{"model.hidden_dim": 64}`` sets one network key."""
        import yaml  # here: the GPU recipe (training/fast.py) imports this module where only torch may be installed

        values = yaml.safe_load(Path(path).read_text())
        if values is None:  # an empty file would silently train with every default (issue 24's sweep)
            raise ValueError(f"{path} is empty (or only comments): a training config names at least its data and "
                             "run_dir; start from configs/bundled_cpu.yaml or configs/tiny_test.yaml")
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of TrainConfig keys, got {type(values).__name__}")
        values = nest_model_keys(values, FLAT_MODEL_KEYS, "TrainConfig", str(path))
        return cls.from_dict(apply_overrides(values, overrides, FLAT_MODEL_KEYS, "TrainConfig"), source=str(path))

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
