r"""Property embeddings and the adapter that injects them into the denoiser (MatterGen ref §8.2–§8.3).

Embedding of property p for crystal b (``PropertyEmbedding``), width H (the denoiser's hidden size)::

    scalar           e = MLP( [ŷ, sin(ω_k ŷ), cos(ω_k ŷ)]_{k=0..K−1} ),  ω_k = π 2^k / 8   (ŷ normalised, K = 8:
                     periods 16 … 0.125 in units of the label's σ — smooth, and fine enough to tell values apart)
    categorical      e = Embedding(num_categories, H)[index]
    chemical_system  e = Linear(76 → H)(multi-hot over the 76 generable elements)
    absent/dropped   e = n_p, a learned H-vector (the null embedding), also for every p when use_condition=False

Adapter, before every denoiser layer l (the hook ``adapter(l, h, batch_idx, conditions, use_condition)``)::

    a_{p,l} = W2_{p,l} ReLU( W1_{p,l} [h_i ‖ e_{p,b(i)}] + b1 ) + b2       (MatterGen's Linear(2H→H)+ReLU+Linear)
    out_i   = Σ_p  M_{p,l} a_{p,l}                                       (mix-in M: Linear(H→H, no bias),
                                                                          ZERO-initialised)

so a fresh adapter returns exactly 0 and the conditioned model starts equal to its base (ref §8.3).
Difference from MatterGen: there the term of p is multiplied by 0 when p is unconditional (its null vector is
zeros); here every property always contributes, with its learned null vector when absent. One checkpoint then
serves any subset of its properties (absent ones are "unknown", as in training with subset dropout),
and ``use_condition=False`` (all null) is the unconditional model used by classifier-free guidance.
The denoiser calls the adapter whenever ``model.adapter`` is set, also when ``conditions`` is None.

All P properties of a layer are computed together: W1 [h ‖ e] = W1_h h + W1_e e, where W1_h h is one
(H → P·A) matmul per atom and W1_e e is per crystal; the second linear and the mix-in are batched over p.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mattergen_kit.conditioning.properties import NUM_ELEMENTS, PropertySpec

NUM_FOURIER = 8


def fourier_features(y: torch.Tensor, k: int = NUM_FOURIER) -> torch.Tensor:
    """[ŷ, sin(ω_j ŷ), cos(ω_j ŷ)], ω_j = π 2^j / 8, j = 0..k−1: (B, 1 + 2k)."""
    omega = math.pi * 2.0 ** torch.arange(k, device=y.device, dtype=torch.float32) / 8.0
    angles = y.float()[:, None] * omega
    return torch.cat([y.float()[:, None], angles.sin(), angles.cos()], dim=-1)


class PropertyEmbedding(nn.Module):
    """``(encoded, present) -> (B, H)``: the embedding of present values, the learned null vector elsewhere."""

    def __init__(self, spec: PropertySpec, dim: int):
        super().__init__()
        self.kind = spec.kind
        if spec.kind == "scalar":
            self.embed = nn.Sequential(nn.Linear(1 + 2 * NUM_FOURIER, dim), nn.SiLU(), nn.Linear(dim, dim))
        elif spec.kind == "categorical":
            self.embed = nn.Embedding(len(spec.categories), dim)
        else:
            self.embed = nn.Linear(NUM_ELEMENTS, dim)
        self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, encoded: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        if self.kind == "scalar":
            e = self.embed(fourier_features(encoded))
        elif self.kind == "categorical":
            e = self.embed(encoded.clamp(min=0))
        else:
            e = self.embed(encoded)
        return torch.where(present[:, None], e, self.null.expand_as(e))


class Adapter(nn.Module):
    """Zero-initialised property adapter for :class:`~mattergen_kit.model.CrystalDenoiser` (formulas above).

    ``specs``: the properties (with normalisation stats for scalars), ``hidden_dim`` / ``num_layers`` of the
    denoiser, ``adapter_dim`` A the width of the per-property MLP (MatterGen: A = H).
    """

    def __init__(self, specs: list[PropertySpec] | dict[str, PropertySpec], hidden_dim: int, num_layers: int,
                 adapter_dim: int | None = None):
        super().__init__()
        specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
        if not specs:
            raise ValueError("an adapter needs at least one property")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate property names in {names}")
        unfitted = [s.name for s in specs if not s.fitted]
        if unfitted:
            raise ValueError(f"properties {unfitted} have no normalisation stats (PropertySpec.fit_normalisation)")
        self.specs = {s.name: s for s in specs}
        H, A, P = hidden_dim, adapter_dim or hidden_dim, len(specs)
        self.hidden_dim, self.adapter_dim, self.num_layers = H, A, num_layers
        self.embeddings = nn.ModuleDict({s.name: PropertyEmbedding(s, H) for s in specs})
        self.w1_h = nn.ModuleList(nn.Linear(H, P * A) for _ in range(num_layers))                  # W1_h (+ b1)
        self.w1_e = nn.ParameterList(nn.Parameter(_linear_init(P, H, A)) for _ in range(num_layers))  # W1_e
        self.w2 = nn.ParameterList(nn.Parameter(_linear_init(P, A, A)) for _ in range(num_layers))
        self.b2 = nn.ParameterList(nn.Parameter(torch.zeros(P, A)) for _ in range(num_layers))
        self.mixin = nn.ModuleList(nn.Linear(P * A, H, bias=False) for _ in range(num_layers))      # Σ_p M_p a_p
        for m in self.mixin:
            nn.init.zeros_(m.weight)

    @property
    def property_names(self) -> list[str]:
        return list(self.specs)

    def config_dict(self) -> dict:
        return {"properties": [s.to_dict() for s in self.specs.values()], "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers, "adapter_dim": self.adapter_dim}

    @classmethod
    def from_config(cls, config: dict) -> "Adapter":
        return cls([PropertySpec.from_dict(d) for d in config["properties"]], config["hidden_dim"],
                   config["num_layers"], config.get("adapter_dim"))

    def embed(self, conditions: dict[str, Any] | None, use_condition: torch.Tensor | None, num: int,
              device) -> torch.Tensor:
        """(P, B, H) property embeddings; null vectors for absent values, unknown names rejected."""
        conditions = conditions or {}
        unknown = [k for k in conditions if k not in self.specs]
        if unknown:
            raise ValueError(f"the adapter was not trained on {unknown}; it knows {self.property_names}")
        out = []
        for name, spec in self.specs.items():
            if name in conditions and conditions[name] is not None:
                encoded, present = spec.encode(conditions[name], num, device)
            else:
                encoded, present = spec.encode(None, num, device)
            if use_condition is not None:
                present = present & use_condition.to(device=device, dtype=torch.bool)
            out.append(self.embeddings[name](encoded, present))
        return torch.stack(out)

    def forward(self, layer: int, h: torch.Tensor, batch_idx: torch.Tensor, conditions: dict | None,
                use_condition: torch.Tensor | None) -> torch.Tensor:
        B = int(use_condition.numel()) if use_condition is not None else int(batch_idx.max()) + 1 if len(batch_idx) else 0
        P, A = len(self.specs), self.adapter_dim
        # the embeddings are the same for every layer of one forward pass: computed at layer 0, reused after
        key = (conditions if conditions else None, use_condition, B)
        cached = getattr(self, "_embedded", None)
        if layer == 0 or cached is None or cached[0][0] is not key[0] or cached[0][1] is not key[1] or cached[0][2] != B:
            self._embedded = (key, self.embed(conditions, use_condition, B, h.device))
        e = self._embedded[1]                                                    # (P, B, H)
        if layer == self.num_layers - 1:  # nothing (no autograd graph) is kept between forward passes
            self._embedded = None
        pre_e = torch.einsum("pbh,pha->pba", e, self.w1_e[layer])                 # W1_e e per crystal
        pre = self.w1_h[layer](h).view(-1, P, A) + pre_e.transpose(0, 1).index_select(0, batch_idx)
        a = torch.einsum("npa,pac->npc", torch.relu(pre), self.w2[layer]) + self.b2[layer]   # (ΣN, P, A)
        return self.mixin[layer](a.reshape(-1, P * A))                            # Σ_p M_p a_p, (ΣN, H)


def _linear_init(P: int, d_in: int, d_out: int) -> torch.Tensor:
    """P stacked (d_in, d_out) weights with nn.Linear's default U(−1/√d_in, 1/√d_in)."""
    bound = 1.0 / math.sqrt(d_in)
    return torch.empty(P, d_in, d_out).uniform_(-bound, bound)


def attach_adapter(denoiser: nn.Module, specs, adapter_dim: int | None = None) -> Adapter:
    """Give ``denoiser`` (a CrystalDenoiser) a fresh zero-initialised adapter for ``specs``; returns it."""
    cfg = denoiser.config
    adapter = Adapter(specs, cfg.hidden_dim, cfg.num_layers, adapter_dim)
    denoiser.adapter = adapter.to(next(denoiser.parameters()).device)
    return adapter


def adapter_from_meta(meta: dict) -> Adapter | None:
    """The (untrained) adapter a checkpoint's ``meta["adapter"]`` describes, or None for a base model."""
    config = (meta or {}).get("adapter")
    return Adapter.from_config(config) if config else None
