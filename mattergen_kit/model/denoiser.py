"""The denoiser: a small periodic message-passing network (CSPNet-like), pure torch.

Graph: every ordered pair (i, j) of atoms inside one crystal, self-pairs included (≤ 20 atoms ⇒ ≤ 400
edges per crystal, no neighbour search). ``graph="knn:K"`` keeps, for every atom i, only the K atoms j of its
crystal nearest to it under the minimum-image distance (self included):

    d_ij = min_{n ∈ {−1,0,1}³} | (f_j − f_i − round(f_j − f_i) + n) L |,   edges (i, j) with rank_i(d_ij) < K

so a cell of N ≤ K atoms has exactly the all-pairs graph (the same network, the same weights) and a 52-atom
cell N·K edges instead of N². d_ij is computed without gradient; it only selects edges, so the features stay
the invariant ones below (d is unchanged by rotations, shifts and atom permutations).
Everything the network sees is invariant by construction:

    lattice      g_b  = Gram matrix G = L Lᵀ (6 entries) / s_N²,  s_N = (N/ρ)^{1/3}      (rotation: L → L Rᵀ
                        leaves G unchanged)
    pair         φ_ij = [sin 2πkΔf, cos 2πkΔf]_{k=1..K, xyz},  Δf = f_j − f_i               (periodic shift
                        f → f + c and cell image f_i → f_i + n leave φ unchanged)
    crystal      z_b  = MLP(sinusoid(1000 t) ‖ N/20)                                          (time enters every layer)

One layer (pre-LayerNorm residual, mean aggregation, messages split so the big matmuls run per atom):

    x_i   = LN(h_i) + W_z z_b + S_l(c_b, mean_j LN(h_j)) + adapter_l(h_i, conditions)
    m_ij  = SiLU( W2 · SiLU( A x_i + B x_j + C φ_ij + D g_b ) )
    h_i  ← h_i + MLP( x_i ‖ mean_j m_ij )

Crystal summary S_l (``crystal_summary=True``; 0 for models trained without it, and exactly 0 at
initialisation, so a base model continued with it starts as the base model):

    c_b   = (1/N_b) Σ_i onehot(x_i) ∈ R^101      the cell's composition so far (revealed elements and the
                                                 fraction still masked), the same for every atom of b
    S_l   = W_l^out SiLU( W_l^in [E(c_b) ‖ mean_i LN(h_i)] ),   W_l^out = 0 at init
    It hands every atom the exact composition revealed so far and a global state, so the types predicted
    for still-masked atoms can agree with the ones already revealed (the incoherence the base model had).

Composition logits (``composition_logits=True``): a direct co-occurrence prior on the type logits,

    type_logits_i += W c_b,   W ∈ R^{101×101}, W = 0 at init

W[c, c'] raises element c where the cell already holds c' (diagonal: "the same element again"; off-diagonal:
partners such as Li with O). Measured on the round-1 model (benchmarks/bench_type_coherence.py): with only
2 % of the atoms still masked, the network put 73 % of a masked atom's probability on elements the cell
already had, against 97 % in the data.

Outputs (DenoiserOutput, see docs/architecture.md):

    type_logits   Linear(LN(h_i)) → 101           class Z − 1, class 100 = mask
    coord_score   Linear(LN(h_i)) + mean_j Σ_k w_ijk ⊙ φ_ij   σ·score in fractional space (w_ij = Linear(m_ij)
                  of the last layer, per axis and frequency): invariant to rotations, shifts and cell images,
                  permuted with the atoms
    lattice_score sym( M_b · L / s_N ),  M_b = MLP(mean_i h_i ‖ z_b ‖ g_b) ∈ R^{3×3},  sym(X) = (X + Xᵀ)/2
                  M_b is built from invariants, so before symmetrisation M L is exactly equivariant
                  (L → L Rᵀ ⇒ M L → M L Rᵀ, the way a score on L transforms); any S can be written M L,
                  so nothing is lost. On the canonical symmetric lattices used everywhere the result is
                  symmetric like the target −Z_sym (ref §4.4–4.5).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mattergen_kit.constants import AVERAGE_DENSITY, NUM_CLASSES
from mattergen_kit.data.crystal_batch import CrystalBatch
from mattergen_kit.diffusion.joint import DenoiserOutput

NUM_TYPE_CLASSES = NUM_CLASSES  # Z − 1 for Z = 1..100, and 100 for the mask token Z = 101
LIMIT_DENSITY = AVERAGE_DENSITY  # atoms/Å³ (ref §4.2); only used to scale lattice features to O(1)


@dataclass
class DenoiserConfig:
    """The network's shape: ``CrystalDenoiser(**asdict(config))``, a checkpoint's ``model_config``, and the
    ``model:`` section of both trainers' configs (training/config.py TrainConfig, training/fast.py FastConfig)."""

    hidden_dim: int = 128
    num_layers: int = 4
    num_freqs: int = 8  # K in the Fourier features of Δf
    time_dim: int = 128  # width of the sinusoidal time encoding (even: sin and cos halves)
    coord_edge_head: bool = True  # add the pairwise Fourier "force" term to the coordinate score
    crystal_summary: bool = False  # per-layer composition + pooled-state summary (zero-initialised mix-in)
    composition_logits: bool = False  # type logits += W c_b: a co-occurrence prior from the cell (zero init)
    graph: str = "all"  # "all" pairs, or "knn:K": the K nearest atoms of each atom (minimum image; module doc)

    def __post_init__(self) -> None:
        for name in ("hidden_dim", "num_layers", "num_freqs", "time_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer (got {value!r})")
            setattr(self, name, int(value))
        if self.time_dim % 2:
            raise ValueError(f"model.time_dim must be even: the time encoding is sin and cos halves "
                             f"(got {self.time_dim})")
        for name in ("coord_edge_head", "crystal_summary", "composition_logits"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model.{name} must be true or false (got {getattr(self, name)!r})")
        if not isinstance(self.graph, str):
            raise ValueError(f"model.graph must be 'all' or 'knn:K' (got {self.graph!r})")
        try:
            parse_graph(self.graph)
        except ValueError as err:
            raise ValueError(f"model.{err}") from None

    @classmethod
    def from_dict(cls, values: dict) -> "DenoiserConfig":
        """From a checkpoint's ``model_config`` or a config's ``model:`` mapping; unknown keys are an error
        naming the known ones (missing keys take the defaults above)."""
        if isinstance(values, DenoiserConfig):
            return values
        if not isinstance(values, dict):
            raise ValueError(f"model must be a mapping of DenoiserConfig keys, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown model keys {unknown}; known keys: {known}")
        return cls(**values)


def sinusoidal(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(x ω_i), cos(x ω_i)], ω_i = 10000^{−2i/dim} (transformer / NoiseLevelEncoding form)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = x.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def fully_connected_edges(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j), i and j in the same crystal, self-pairs included. Returns (src, dst)."""
    device = num_atoms.device
    offsets = torch.cumsum(num_atoms, 0) - num_atoms  # first atom of each crystal
    batch_idx = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), num_atoms)
    per_atom = num_atoms[batch_idx]  # every atom has N_b partners (itself included)
    src = torch.repeat_interleave(torch.arange(len(batch_idx), device=device), per_atom)
    first_edge = torch.cumsum(per_atom, 0) - per_atom
    rank = torch.arange(len(src), device=device) - torch.repeat_interleave(first_edge, per_atom)
    dst = offsets[batch_idx[src]] + rank
    return src, dst


def parse_graph(graph: str) -> int | None:
    """None for "all", K for "knn:K" (K ≥ 1); anything else is an error saying what is accepted."""
    if graph == "all":
        return None
    if graph.startswith("knn:") and graph[4:].isdigit() and int(graph[4:]) >= 1:
        return int(graph[4:])
    raise ValueError(f"graph must be 'all' or 'knn:K' with an integer K >= 1 (got {graph!r})")


#: the 27 cell images n ∈ {−1, 0, 1}³ searched for the minimum-image distance
_IMAGES = torch.tensor([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], dtype=torch.float32)


@torch.no_grad()
def nearest_neighbour_edges(frac: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor,
                            k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(src, dst): for every atom i the min(K, N_b) atoms j of its crystal with the smallest minimum-image distance
    d_ij (module doc; ties broken by j's index), sorted by src. Self-pairs (d = 0) are always kept."""
    src, dst = fully_connected_edges(num_atoms)
    if int(num_atoms.max()) <= k:
        return src, dst
    batch_idx = torch.repeat_interleave(torch.arange(len(num_atoms), device=frac.device), num_atoms)
    frac, lattice = frac.float(), lattice.float()
    delta = frac.index_select(0, dst) - frac.index_select(0, src)
    delta = delta - torch.round(delta)
    images = _IMAGES.to(device=frac.device, dtype=frac.dtype)
    cell = lattice.index_select(0, batch_idx.index_select(0, src))                  # (E, 3, 3)
    dist = torch.full((len(src),), float("inf"), device=frac.device, dtype=frac.dtype)
    for image in images:  # 27 (E, 3) products (elementwise: float32 under autocast), no (E, 27, 3) tensor
        cart = ((delta + image)[:, :, None] * cell).sum(1)                          # (f_j − f_i + n) L
        dist = torch.minimum(dist, torch.linalg.vector_norm(cart, dim=-1))
    dist = torch.where(src == dst, torch.full_like(dist, -1.0), dist)               # self first
    order = torch.argsort(dist, stable=True)
    order = order[torch.argsort(src[order], stable=True)]                           # by src, then by distance
    first_edge = torch.cumsum(num_atoms[batch_idx], 0) - num_atoms[batch_idx]       # first edge of each src
    rank = torch.arange(len(src), device=frac.device) - first_edge.index_select(0, src[order])
    keep = order[rank < k]
    return src[keep], dst[keep]


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    out = values.new_zeros((size,) + values.shape[1:]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp(min=1).to(values.dtype)
    return out / count.view(-1, *([1] * (values.ndim - 1)))


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class CrystalSummary(nn.Module):
    """S_l(c_b, mean_i LN(h_i)) of one layer (module doc); the output layer is zero-initialised."""

    def __init__(self, hidden: int):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU())
        self.out = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, composition_embedding, h_normed, batch_idx, num_crystals):
        pooled = scatter_mean(h_normed, batch_idx, num_crystals)
        return self.out(self.inner(torch.cat([composition_embedding, pooled], dim=-1))).index_select(0, batch_idx)


class Layer(nn.Module):
    def __init__(self, hidden: int, edge_dim: int, lattice_dim: int, crystal_summary: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.summary = CrystalSummary(hidden) if crystal_summary else None
        self.time = nn.Linear(hidden, hidden)
        self.pair = nn.Linear(hidden, 2 * hidden)  # A x_i and B x_j in one matmul, per atom
        self.edge = nn.Linear(edge_dim, hidden, bias=False)  # C φ_ij
        self.lattice = nn.Linear(lattice_dim, hidden, bias=False)  # D g_b (per crystal, then gathered)
        self.msg = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.update = mlp(2 * hidden, hidden, hidden)

    def forward(self, h, z, g, phi, src, dst, batch_idx, extra, composition=None):
        normed = self.norm(h)
        x = normed + self.time(z).index_select(0, batch_idx) + extra
        if self.summary is not None:
            x = x + self.summary(composition, normed, batch_idx, z.shape[0])
        a, b = self.pair(x).chunk(2, dim=-1)
        a = a + self.lattice(g).index_select(0, batch_idx)  # D g_b is per crystal: add it per atom, not per edge
        pre = a.index_select(0, src) + b.index_select(0, dst) + self.edge(phi)  # index_select: cheap backward
        m = self.msg(pre)
        agg = scatter_mean(m, src, h.shape[0])
        return h + self.update(torch.cat([x, agg], dim=-1)), m


class CrystalDenoiser(nn.Module):
    """``model(noisy, t, conditions=None, use_condition=None) -> DenoiserOutput`` (docs/architecture.md).

    Conditioning hook: ``model.adapter`` is ``None`` for a base model. An adapter is any module with
    ``adapter(layer: int, h (ΣN,H), batch_idx (ΣN,), conditions: dict, use_condition (B,) bool) -> (ΣN,H)``
    whose output is zero at initialisation (ref §8.3); it is added to every layer's input. With
    ``conditions=None`` or no adapter the call is exactly the unconditional network.
    """

    def __init__(self, hidden_dim: int = 128, num_layers: int = 4, num_freqs: int = 8, time_dim: int = 128,
                 coord_edge_head: bool = True, crystal_summary: bool = False, composition_logits: bool = False,
                 graph: str = "all"):
        super().__init__()
        self.neighbours = parse_graph(graph)
        self.config = DenoiserConfig(hidden_dim, num_layers, num_freqs, time_dim, coord_edge_head, crystal_summary,
                                     composition_logits, graph)
        H = hidden_dim
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, num_freqs + 1, dtype=torch.float32),
                             persistent=False)
        edge_dim, lattice_dim = 6 * num_freqs, 6
        self.type_embed = nn.Embedding(NUM_TYPE_CLASSES, H)
        self.crystal_embed = mlp(time_dim + 1, H, H)  # z_b from (t, N)
        self.layers = nn.ModuleList(Layer(H, edge_dim, lattice_dim, crystal_summary) for _ in range(num_layers))
        self.composition_embed = nn.Linear(NUM_TYPE_CLASSES, H) if crystal_summary else None  # E(c_b)
        self.out_norm = nn.LayerNorm(H)
        self.type_head = nn.Linear(H, NUM_TYPE_CLASSES)
        self.composition_logits = None
        if composition_logits:  # W c_b, zero-initialised (module doc)
            self.composition_logits = nn.Linear(NUM_TYPE_CLASSES, NUM_TYPE_CLASSES, bias=False)
            nn.init.zeros_(self.composition_logits.weight)
        self.coord_head = nn.Linear(H, 3)
        self.coord_edge = nn.Linear(H, 6 * num_freqs) if coord_edge_head else None
        self.lattice_head = mlp(2 * H + lattice_dim, H, 9)
        self.adapter: nn.Module | None = None
        self.symmetrize_lattice = True  # tests switch it off to check M L → M L Rᵀ exactly

    # ---------------------------------------------------------------- features
    def lattice_features(self, lattice: torch.Tensor, num_atoms: torch.Tensor):
        """(g (B,6) invariant Gram features, s_N (B,) length scale)."""
        scale = (num_atoms.float() / LIMIT_DENSITY) ** (1.0 / 3.0)
        gram = lattice @ lattice.transpose(1, 2) / scale.view(-1, 1, 1) ** 2
        iu = torch.triu_indices(3, 3, device=lattice.device)
        return gram[:, iu[0], iu[1]], scale

    def pair_features(self, frac: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """φ_ij = [sin, cos](2πk (f_j − f_i)) for k = 1..K, all three axes: (E, 6K)."""
        delta = frac.index_select(0, dst) - frac.index_select(0, src)
        angles = delta[:, :, None] * self.freqs  # (E, 3, K)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)

    def graph_edges(self, noisy: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(src, dst) of the message-passing graph: all pairs, or the K nearest (``graph="knn:K"``)."""
        if self.neighbours is None:
            return fully_connected_edges(noisy.num_atoms)
        return nearest_neighbour_edges(noisy.frac_coords, noisy.lattice, noisy.num_atoms, self.neighbours)

    # ---------------------------------------------------------------- forward
    def forward(self, noisy: CrystalBatch, t: torch.Tensor, conditions: dict | None = None,
                use_condition: torch.Tensor | None = None):
        num_atoms, lattice = noisy.num_atoms, noisy.lattice
        B, n_total = len(num_atoms), noisy.atom_types.shape[0]
        batch_idx = torch.repeat_interleave(torch.arange(B, device=num_atoms.device), num_atoms)
        src, dst = self.graph_edges(noisy)

        g, scale = self.lattice_features(lattice, num_atoms)
        phi = self.pair_features(noisy.frac_coords, src, dst)
        t = torch.as_tensor(t, dtype=torch.float32, device=lattice.device).expand(B)
        z = self.crystal_embed(torch.cat([sinusoidal(1000.0 * t, self.config.time_dim),
                                          num_atoms.float()[:, None] / 20.0], dim=-1))
        h = self.type_embed(noisy.atom_types - 1)
        composition = fractions = None
        if self.composition_embed is not None or self.composition_logits is not None:
            onehot = torch.nn.functional.one_hot(noisy.atom_types - 1, NUM_TYPE_CLASSES).float()
            fractions = scatter_mean(onehot, batch_idx, B)                 # c_b = (1/N_b) Σ_i onehot(x_i)
        if self.composition_embed is not None:
            composition = self.composition_embed(fractions)                # E(c_b)

        use_adapter = self.adapter is not None  # called also without conditions: then all null embeddings
        if use_adapter and use_condition is None:  # (conditioning/adapter.py: that is the unconditional model)
            use_condition = torch.full((B,), conditions is not None, dtype=torch.bool, device=lattice.device)
        for i, layer in enumerate(self.layers):
            extra = self.adapter(i, h, batch_idx, conditions or {}, use_condition) if use_adapter else 0.0
            h, m = layer(h, z, g, phi, src, dst, batch_idx, extra, composition)

        h = self.out_norm(h)
        pooled = scatter_mean(h, batch_idx, B)
        M = self.lattice_head(torch.cat([pooled, z, g], dim=-1)).view(B, 3, 3)
        ML = M @ (lattice / scale.view(-1, 1, 1))
        coord = self.coord_head(h)
        if self.coord_edge is not None:  # mean_j Σ_k w_ijk^d · [sin, cos](2πk Δf_ij^d), w from the last messages
            E, K2 = phi.shape[0], 2 * self.config.num_freqs
            force = (self.coord_edge(m).view(E, 3, K2) * phi.view(E, 3, K2)).sum(-1)
            coord = coord + scatter_mean(force, src, n_total)
        return DenoiserOutput(
            type_logits=self.type_head(h) if self.composition_logits is None
            else self.type_head(h) + self.composition_logits(fractions).index_select(0, batch_idx),
            coord_score=coord,
            lattice_score=0.5 * (ML + ML.transpose(1, 2)) if self.symmetrize_lattice else ML,
        )

    def config_dict(self) -> dict:
        return asdict(self.config)

    @classmethod
    def from_config(cls, config: dict) -> "CrystalDenoiser":
        return cls(**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
