r"""MatterGen 1.0.3's denoiser in plain torch, built from a released ``config.yaml`` and loading its weights.

MatterGen's network (``mattergen.denoiser.GemNetTDenoiser``, or ``mattergen.adapter.GemNetTAdapter`` for the
fine-tuned property models) on a noisy batch (fractional ``pos`` [n, 3], ``cell`` [B, 3, 3] with rows the
lattice vectors in Å, ``atomic_numbers`` [n] with 101 = masked, ``num_atoms`` [B]) at times ``t`` [B]::

    z_b        = PE(t_b)                         PE(x)_{2k} = sin(x w_k), PE(x)_{2k+1} = cos(x w_k),
                                                 w_k = 10000^{−2k/d}   (``NoiseLevelEncoding``)
    e_{p,b}    = embedding of property p          scalar: PE((y − μ_p)/σ_p) (y → log10 y first if configured);
                                                 space group: E_p[sg − 1]; chemical system: W_p · multihot(Z) + b_p;
                                                 0 when crystal b is unconditional for p (adapter properties)
    h, F, S    = GemNetT(z, pos, cell, Z; e, mask)                   (gemnet.py)
    logits     = W_atom h                          [n, 101], class = Z − 1, 100 = the mask class
    pos score  = cell_b^{−T} F_a                   the Cartesian vector per atom in fractional coordinates
    cell score = S_b                               [B, 3, 3]

``raw_outputs`` returns exactly these three tensors (what ``diffusion_module.model(x, t)`` returns in the
reference, in eval mode; ``pos`` and ``cell`` are σ·score, the model target ``score_times_std``).

Every config field the port reads is checked: a value it cannot honour exactly (another basis, activation,
embedding kind, a base-model property embedding, …) raises :class:`UnsupportedConfigError` naming the
field. The state dict of a released Lightning checkpoint (keys ``diffusion_module.model.*``) maps onto
:class:`MatterGenDenoiser` key for key (``load_state_dict(strict=True)``); ``tests/test_mattergen_port.py``
proves it for the nine released configs and compares the outputs with those of MatterGen's own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from mattergen_kit.constants import atomic_number
from mattergen_kit.model.gemnet import AtomEmbedding, GemNetT

MAX_ATOMIC_NUM = 100
MASK_Z = 101
NUM_SPACE_GROUPS = 230
STATE_DICT_PREFIX = "diffusion_module.model."

DENOISER_TARGET = "mattergen.denoiser.GemNetTDenoiser"
ADAPTER_TARGET = "mattergen.adapter.GemNetTAdapter"
GEMNET_TARGET = "mattergen.common.gemnet.gemnet.GemNetT"
GEMNET_CTRL_TARGET = "mattergen.common.gemnet.gemnet_ctrl.GemNetTCtrl"
ATOM_EMBEDDING_TARGET = "mattergen.common.gemnet.layers.embedding_block.AtomEmbedding"
PROPERTY_EMBEDDING_TARGET = "mattergen.property_embeddings.PropertyEmbedding"
NOISE_LEVEL_ENCODING_TARGET = "mattergen.diffusion.model_utils.NoiseLevelEncoding"
CHEMICAL_SYSTEM_TARGET = "mattergen.property_embeddings.ChemicalSystemMultiHotEmbedding"
SPACE_GROUP_TARGET = "mattergen.property_embeddings.SpaceGroupEmbeddingVector"
EMBEDDING_VECTOR_TARGET = "mattergen.property_embeddings.EmbeddingVector"
SCALER_TARGET = "mattergen.common.utils.data_utils.StandardScalerTorch"
IDENTITY_TARGET = "torch.nn.Identity"

# GemNetT constructor arguments the port implements, with the only value it supports where that is fixed.
_GEMNET_FIXED = {"num_targets": 1, "otf_graph": True, "regress_stress": True, "rbf": {"name": "gaussian"},
                 "envelope": {"name": "polynomial", "exponent": 5}, "cbf": {"name": "spherical_harmonics"},
                 "output_init": "HeOrthogonal", "encoder_mode": False}
_GEMNET_SIZES = ("latent_dim", "num_spherical", "num_radial", "num_blocks", "emb_size_atom", "emb_size_edge",
                 "emb_size_trip", "emb_size_rbf", "emb_size_cbf", "emb_size_bil_trip", "num_before_skip",
                 "num_after_skip", "num_concat", "num_atom", "cutoff", "max_neighbors", "max_cell_images_per_dim")
_GEMNET_IGNORED = ("_target_", "atom_embedding", "scale_file", "condition_on_adapt", "activation")


class UnsupportedConfigError(ValueError):
    """A MatterGen config field whose value the kit cannot reproduce exactly."""

    def __init__(self, field_path: str, value: Any, why: str):
        self.field_path = field_path
        super().__init__(f"MatterGen config field {field_path} = {value!r}: {why}; the kit's port cannot "
                         "honour it exactly, so it refuses this config")


# ------------------------------------------------------------------------------------------------ embeddings
class NoiseLevelEncoding(nn.Module):
    """Sinusoidal encoding PE(x) of a scalar per crystal (t, or a normalised property value); buffer ``div_term``."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("div_term", torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((x.shape[0], self.d_model), device=self.div_term.device)
        out[:, 0::2] = torch.sin(x[:, None] * self.div_term[None])
        out[:, 1::2] = torch.cos(x[:, None] * self.div_term[None])
        return out


class EmbeddingVector(nn.Module):
    """One learned vector (``embedding.weight`` [1, d]); the adapter replaces it by zeros (no weights kept)."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(1, hidden_dim)


class SpaceGroupEmbedding(nn.Module):
    """E[sg − 1], sg ∈ 1..230 (``embedding.weight`` [230, d])."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(NUM_SPACE_GROUPS, hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x.long() - 1)


class ChemicalSystemEmbedding(nn.Module):
    """W · multihot + b with multihot[Z] = 1 for every element Z of the system (101 slots, slot 0 unused)."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.embedding = nn.Linear(MAX_ATOMIC_NUM + 1, hidden_dim)

    def forward(self, multi_hot: torch.Tensor) -> torch.Tensor:
        return self.embedding(multi_hot)


class StandardScaler(nn.Module):
    """ŷ = (y − μ) / σ, with y → log10 y first when ``log10_transform`` (buffers ``means``, ``stds`` [1])."""

    def __init__(self, log10_transform: bool = False):
        super().__init__()
        self.log10_transform = log10_transform
        self.register_buffer("means", torch.zeros(1))
        self.register_buffer("stds", torch.ones(1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.log10_transform:
            if bool((y <= 0).any()):
                raise ValueError("this property is normalised as log10(y): its values must be > 0")
            y = torch.log10(y)
        return (y - self.means) / self.stds


class PropertyEmbedding(nn.Module):
    """e_b = cond(scaler(y_b)) for crystals that use the condition, 0 (the adapter's unconditional value) else."""

    def __init__(self, name: str, kind: str, hidden_dim: int, scaler: nn.Module):
        super().__init__()
        self.name, self.kind, self.hidden_dim = name, kind, hidden_dim
        if kind == "scalar":
            self.conditional_embedding_module = NoiseLevelEncoding(hidden_dim)
        elif kind == "space_group":
            self.conditional_embedding_module = SpaceGroupEmbedding(hidden_dim)
        else:
            self.conditional_embedding_module = ChemicalSystemEmbedding(hidden_dim)
        self.scaler = scaler

    def forward(self, values: torch.Tensor | None, use_condition: torch.Tensor, num_crystals: int,
                device) -> torch.Tensor:
        zeros = torch.zeros(num_crystals, self.hidden_dim, device=device)
        if values is None or not bool(use_condition.any()):
            return zeros
        if self.kind == "chemical_system":
            encoded = self.conditional_embedding_module(values)
        else:
            safe = torch.where(use_condition, values, torch.ones_like(values))   # absent values are never used
            encoded = self.conditional_embedding_module(self.scaler(safe))
        return torch.where(use_condition[:, None], encoded, zeros)


# ------------------------------------------------------------------------------------------------ the denoiser
@dataclass
class PropertyConfig:
    name: str
    kind: str            # "scalar" | "space_group" | "chemical_system"
    log10: bool = False


@dataclass
class MatterGenConfig:
    """What the port reads from a released config (everything else in it is checked or irrelevant here)."""

    hidden_dim: int
    gemnet: dict
    properties: list[PropertyConfig] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def property_names(self) -> list[str]:
        return [p.name for p in self.properties]


class MatterGenDenoiser(nn.Module):
    """MatterGen's GemNetTDenoiser / GemNetTAdapter (module names as in the reference: state-dict compatible)."""

    def __init__(self, config: MatterGenConfig):
        super().__init__()
        self.config = config
        g = config.gemnet
        self.gemnet = GemNetT(AtomEmbedding(g["atom_embedding_size"], with_mask_type=True),
                              condition_on_adapt=config.property_names,
                              **{k: v for k, v in g.items() if k != "atom_embedding_size"})
        self.noise_level_encoding = NoiseLevelEncoding(config.hidden_dim)
        self.property_embeddings = nn.ModuleDict()       # base-model embeddings: none in any released model
        if config.properties:
            self.property_embeddings_adapt = nn.ModuleDict({
                p.name: PropertyEmbedding(p.name, p.kind, g["emb_size_atom"],
                                          StandardScaler(p.log10) if p.kind == "scalar" else nn.Identity())
                for p in config.properties})
        self.fc_atom = nn.Linear(config.hidden_dim, MAX_ATOMIC_NUM + 1)

    @property
    def property_names(self) -> list[str]:
        return self.config.property_names

    def forward(self, pos, cell, atomic_numbers, num_atoms, t, conditions: Mapping[str, torch.Tensor] | None = None,
                use_condition: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``conditions[p]``: (B,) float values (space group numbers as floats) or (B, 101) multi-hot for the
        chemical system; ``use_condition[p]``: (B,) bool, True where crystal b is conditioned on p (default:
        every crystal that has a value for p). Missing properties are unconditional."""
        B = num_atoms.shape[0]
        batch = torch.repeat_interleave(torch.arange(B, device=pos.device), num_atoms)
        z = self.noise_level_encoding(t)
        cond_values, cond_mask = {}, {}
        for p in self.config.properties:
            values = None if conditions is None else conditions.get(p.name)
            use = torch.zeros(B, dtype=torch.bool, device=pos.device)
            if values is not None:
                use = (torch.ones(B, dtype=torch.bool, device=pos.device) if use_condition is None
                       or p.name not in use_condition else use_condition[p.name].to(pos.device).bool())
            cond_values[p.name] = self.property_embeddings_adapt[p.name](values, use, B, pos.device)
            cond_mask[p.name] = ~use[:, None]                 # MatterGen's mask: True = unconditional
        h, forces, lattice_score = self.gemnet(z, pos, atomic_numbers, num_atoms, batch, cell,
                                               cond_adapt=cond_values, cond_adapt_mask=cond_mask)
        # fractional score: (L^{-1})ᵀ F per atom (MatterGen: cell.inverse().transpose(1, 2) @ F)
        frac = (cell.inverse().transpose(1, 2)[batch] @ forces.unsqueeze(-1)).squeeze(-1)
        return {"pos": frac, "cell": lattice_score, "atomic_numbers": self.fc_atom(h)}


# ------------------------------------------------------------------------------------------------ config
def _require(value, expected, field_path: str, why: str) -> None:
    if value != expected:
        raise UnsupportedConfigError(field_path, value, why)


def _property_config(name: str, cfg: Mapping, hidden: int, prefix: str) -> PropertyConfig:
    _require(cfg.get("_target_"), PROPERTY_EMBEDDING_TARGET, f"{prefix}._target_", "not a PropertyEmbedding")
    _require(cfg.get("name"), name, f"{prefix}.name", "must equal its key")
    cond = cfg.get("conditional_embedding_module") or {}
    target = cond.get("_target_")
    if target == NOISE_LEVEL_ENCODING_TARGET:
        kind, size = "scalar", cond.get("d_model")
    elif target == SPACE_GROUP_TARGET:
        kind, size = "space_group", cond.get("hidden_dim")
    elif target == CHEMICAL_SYSTEM_TARGET:
        kind, size = "chemical_system", cond.get("hidden_dim")
    else:
        raise UnsupportedConfigError(f"{prefix}.conditional_embedding_module._target_", target,
                                     "unknown property embedding")
    _require(size, hidden, f"{prefix}.conditional_embedding_module", f"embedding size must be emb_size_atom = {hidden}")
    uncond = cfg.get("unconditional_embedding_module") or {}
    _require(uncond.get("_target_"), EMBEDDING_VECTOR_TARGET, f"{prefix}.unconditional_embedding_module._target_",
             "the adapter's unconditional embedding must be an EmbeddingVector (replaced by zeros)")
    scaler = cfg.get("scaler") or {"_target_": IDENTITY_TARGET}
    log10 = False
    if kind == "scalar":
        _require(scaler.get("_target_"), SCALER_TARGET, f"{prefix}.scaler._target_",
                 "a scalar property needs MatterGen's StandardScalerTorch")
        extra = set(scaler) - {"_target_", "log10_transform"}
        if extra:
            raise UnsupportedConfigError(f"{prefix}.scaler.{sorted(extra)[0]}", scaler[sorted(extra)[0]],
                                         "unknown scaler option")
        log10 = bool(scaler.get("log10_transform", False))
    else:
        _require(scaler.get("_target_"), IDENTITY_TARGET, f"{prefix}.scaler._target_",
                 "categorical properties are not scaled")
    return PropertyConfig(name, kind, log10)


def parse_config(config: Mapping | str | Path) -> MatterGenConfig:
    """Read a released MatterGen ``config.yaml`` (path or loaded dict) into a :class:`MatterGenConfig`.

    Raises :class:`UnsupportedConfigError` naming the first field the port cannot honour exactly."""
    if not isinstance(config, Mapping):
        config = yaml.safe_load(Path(config).read_text())
    root = "lightning_module.diffusion_module.model"
    try:
        model = config["lightning_module"]["diffusion_module"]["model"]
    except (KeyError, TypeError):
        raise UnsupportedConfigError(root, None, "missing: this is not a MatterGen training config") from None
    target = model.get("_target_")
    if target not in (DENOISER_TARGET, ADAPTER_TARGET):
        raise UnsupportedConfigError(f"{root}._target_", target, "unknown denoiser")
    _require(model.get("atom_type_diffusion", "mask"), "mask", f"{root}.atom_type_diffusion",
             "only the absorbing (mask) D3PM is supported")
    _require(model.get("denoise_atom_types", True), True, f"{root}.denoise_atom_types", "atom types must be denoised")
    if model.get("property_embeddings"):
        raise UnsupportedConfigError(f"{root}.property_embeddings", list(model["property_embeddings"]),
                                     "base-model property embeddings are not supported (no released model has them)")
    if model.get("element_mask_func") is not None:
        raise UnsupportedConfigError(f"{root}.element_mask_func", model["element_mask_func"], "not supported")
    extra = set(model) - {"_target_", "atom_type_diffusion", "denoise_atom_types", "gemnet", "hidden_dim",
                          "property_embeddings", "property_embeddings_adapt", "element_mask_func"}
    if extra:
        key = sorted(extra)[0]
        raise UnsupportedConfigError(f"{root}.{key}", model[key], "unknown denoiser option")
    hidden = int(model.get("hidden_dim", 512))

    g = model.get("gemnet") or {}
    groot = f"{root}.gemnet"
    adapt = model.get("property_embeddings_adapt") or {}
    if target == ADAPTER_TARGET:
        _require(g.get("_target_"), GEMNET_CTRL_TARGET, f"{groot}._target_", "an adapter needs GemNetTCtrl")
        _require(list(g.get("condition_on_adapt") or []), list(adapt), f"{groot}.condition_on_adapt",
                 "must list the adapter's property embeddings in the same order")
        if not adapt:
            raise UnsupportedConfigError(f"{root}.property_embeddings_adapt", adapt, "an adapter without properties")
    else:
        _require(g.get("_target_"), GEMNET_TARGET, f"{groot}._target_", "the base denoiser uses GemNetT")
        if adapt:
            raise UnsupportedConfigError(f"{root}.property_embeddings_adapt", list(adapt),
                                         "only GemNetTAdapter reads adapter properties")
    emb = g.get("atom_embedding") or {}
    _require(emb.get("_target_"), ATOM_EMBEDDING_TARGET, f"{groot}.atom_embedding._target_", "unknown atom embedding")
    _require(emb.get("with_mask_type", False), True, f"{groot}.atom_embedding.with_mask_type",
             "the mask D3PM needs the mask type's embedding")
    for key, value in _GEMNET_FIXED.items():
        if key in g:
            _require(g[key], value, f"{groot}.{key}", f"only {value!r} is implemented")
    if str(g.get("activation", "swish")).lower() not in ("swish", "silu"):
        raise UnsupportedConfigError(f"{groot}.activation", g["activation"], "only swish/silu is implemented")
    extra = set(g) - set(_GEMNET_FIXED) - set(_GEMNET_SIZES) - set(_GEMNET_IGNORED)
    if extra:
        key = sorted(extra)[0]
        raise UnsupportedConfigError(f"{groot}.{key}", g[key], "unknown GemNetT option")
    sizes = {k: g[k] for k in _GEMNET_SIZES if k in g}
    sizes.setdefault("num_blocks", 3)
    sizes.setdefault("emb_size_atom", 512)
    sizes["atom_embedding_size"] = int(emb.get("emb_size", 512))
    if "latent_dim" not in sizes:
        raise UnsupportedConfigError(f"{groot}.latent_dim", None, "required")
    _require(sizes["latent_dim"], hidden, f"{groot}.latent_dim",
             f"the latent is the noise-level encoding alone, so it must equal hidden_dim = {hidden}")
    _require(sizes["emb_size_atom"], hidden, f"{groot}.emb_size_atom",
             f"fc_atom reads the atom embeddings, so it must equal hidden_dim = {hidden}")
    properties = [_property_config(name, cfg, sizes["emb_size_atom"], f"{root}.property_embeddings_adapt.{name}")
                  for name, cfg in adapt.items()]
    return MatterGenConfig(hidden_dim=hidden, gemnet=sizes, properties=properties, raw=dict(config))


def build_denoiser(config: Mapping | str | Path | MatterGenConfig, device: str | torch.device = "cpu") -> MatterGenDenoiser:
    """The port for a config (``device="meta"`` builds it without memory, for key/shape checks)."""
    cfg = config if isinstance(config, MatterGenConfig) else parse_config(config)
    with torch.device(device):
        return MatterGenDenoiser(cfg)


def denoiser_state_dict(lightning_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The denoiser's weights out of a Lightning checkpoint's ``state_dict`` (keys ``diffusion_module.model.*``).

    Other keys are refused by name (the released checkpoints have none)."""
    out, other = {}, []
    for key, value in lightning_state_dict.items():
        if key.startswith(STATE_DICT_PREFIX):
            out[key[len(STATE_DICT_PREFIX):]] = value
        else:
            other.append(key)
    if other:
        raise ValueError(f"checkpoint state_dict has keys outside {STATE_DICT_PREFIX}*: {other[:5]}")
    return out


# ------------------------------------------------------------------------------------------------ raw outputs
# MatterGen's own property names ↔ the kit's (mattergen_kit/conditioning/properties.py)
MATTERGEN_TO_KIT = {"dft_band_gap": "band_gap", "dft_mag_density": "magnetic_density",
                    "ml_bulk_modulus": "bulk_modulus", "dft_bulk_modulus": "bulk_modulus",
                    "hhi_score": "hhi_production", "energy_above_hull": "e_above_hull",
                    "chemical_system": "chemical_system", "space_group": "space_group"}


def kit_name(mattergen_name: str) -> str:
    return MATTERGEN_TO_KIT.get(mattergen_name, mattergen_name)


def resolve_property_name(name: str, model_properties: list[str]) -> str:
    """The model's (MatterGen) property name for ``name`` given in either naming; ValueError listing the
    model's properties (both namings) when it has no such property."""
    if name in model_properties:
        return name
    matches = [p for p in model_properties if kit_name(p) == name]
    if len(matches) == 1:
        return matches[0]
    have = ", ".join(f"{p} (kit: {kit_name(p)})" for p in model_properties) or "none (an unconditional model)"
    raise ValueError(f"this MatterGen model has no property {name!r}; its properties: {have}")


def chemical_system_multi_hot(systems, num: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 101) multi-hot (slot Z) and (B,) presence. ``systems``: one "Li-Fe-O" string for all crystals, or one
    entry per crystal ("Li-Fe-O", a list of symbols, or None / "" for absent)."""
    if systems is None or isinstance(systems, str):
        systems = [systems] * num
    systems = list(systems)
    if len(systems) != num:
        raise ValueError(f"chemical_system has {len(systems)} values for {num} crystals")
    hot = torch.zeros(num, MAX_ATOMIC_NUM + 1, device=device)
    present = torch.zeros(num, dtype=torch.bool, device=device)
    for b, system in enumerate(systems):
        if not system:
            continue
        symbols = system.split("-") if isinstance(system, str) else list(system)
        for symbol in symbols:
            hot[b, atomic_number(symbol)] = 1.0
        present[b] = True
    return hot, present


def encode_conditions(model: MatterGenDenoiser, conditions: Mapping[str, Any] | None, num_crystals: int,
                      device=None) -> tuple[dict, dict]:
    """User conditions (either naming; one value for all crystals or one per crystal; None/NaN = absent)
    → (values, use_condition) as :meth:`MatterGenDenoiser.forward` takes them."""
    values, use = {}, {}
    for name, value in (conditions or {}).items():
        key = resolve_property_name(name, model.property_names)
        kind = next(p.kind for p in model.config.properties if p.name == key)
        if kind == "chemical_system":
            values[key], use[key] = chemical_system_multi_hot(value, num_crystals, device)
            continue
        v = torch.as_tensor([float("nan") if x is None else float(x) for x in value]
                            if isinstance(value, (list, tuple)) else value, dtype=torch.float32, device=device)
        v = v.reshape(-1)
        if v.numel() == 1:
            v = v.expand(num_crystals).clone()
        if v.numel() != num_crystals:
            raise ValueError(f"condition {name!r} has {v.numel()} values for {num_crystals} crystals")
        values[key], use[key] = v, ~torch.isnan(v)
    return values, use


def raw_outputs(model: MatterGenDenoiser, pos: torch.Tensor, cell: torch.Tensor, atomic_numbers: torch.Tensor,
                num_atoms: torch.Tensor, t: torch.Tensor, conditions: Mapping[str, Any] | None = None
                ) -> dict[str, torch.Tensor]:
    """MatterGen's raw denoiser outputs in MatterGen's conventions: ``pos`` [n, 3] (σ·score, fractional),
    ``cell`` [B, 3, 3], ``atomic_numbers`` [n, 101] logits — what ``diffusion_module.model(x, t)`` returns.

    ``conditions``: {property: value} in MatterGen's or the kit's naming; a property given is used by every
    crystal with a value (MatterGen's ``SetConditionalEmbeddingType``), a property left out is unconditional."""
    values, use = encode_conditions(model, conditions, int(num_atoms.shape[0]), pos.device)
    with torch.no_grad():
        return model(pos, cell, atomic_numbers, num_atoms, t, values, use)
