r"""GemNet-T (triplets only) as MatterGen 1.0.3 uses it, in plain torch (no torch_scatter / torch_sparse / PyG).

This is the trunk of MatterGen's denoiser (``mattergen.common.gemnet.gemnet.GemNetT`` and its layer-wise
adapter variant ``gemnet_ctrl.GemNetTCtrl``). Module and attribute names follow the reference exactly, because
a released Lightning checkpoint's state-dict keys are those names (``gemnet.int_blocks.0.trip_interaction...``);
``tests/test_mattergen_port.py`` checks every key and shape of the nine released configs against the list the
reference code produces, and the outputs against the reference's own outputs.

Notation (per crystal b with lattice rows L_b, Cartesian r_i = f_i L_b):

* edges s→t (source s = neighbour, target t = atom that aggregates), one per periodic image within the cutoff,
  at most ``max_neighbors`` per atom (nearest first), made symmetric (every s→t has its t→s at ``id_swap``);
  d_st = |r_s + o_st − r_t| … stored as distance D_st and unit vector V_st pointing from t to s's image;
* triplets b→a←c: for every edge c→a, every other edge b→a with the same target (``id3_ba``, ``id3_ca``);
* radial basis rbf(d) = u(d/c) · exp(−(d/c − μ_k)² / (2 Δ²)), μ_k = k/(K−1), Δ = 1/(K−1), u the polynomial
  envelope u(x) = 1 − (p+1)(p+2)/2 x^p + p(p+2) x^{p+1} − p(p+1)/2 x^{p+2} (x < 1, else 0), p = 5;
* circular basis Y_l(cos φ_cab) = sqrt((2l+1)/4π) P_l(cos φ) (Legendre P_l), l = 0..num_spherical−1;
* Dense(x) = act(W x) with act = SiLU(x)/0.6 ("ScaledSiLU") or identity; Residual(x) = (x + D₂(D₁(x)))/√2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# GemNet-dT scale factors (MatterGen's mattergen/common/gemnet/gemnet-dT.json, from fairchem). The constructor
# starts from these; a released checkpoint stores every factor in its state dict anyway (``scale_factor``).
# Factors of blocks beyond the third (MatterGen has 4 interaction blocks) are not in the file: they start at 1.
GEMNET_DT_SCALE_FACTORS = {
    "TripInteraction_1_had_rbf": 18.873615264892578, "TripInteraction_1_sum_cbf": 7.996850490570068,
    "AtomUpdate_1_sum": 1.220463752746582,
    "TripInteraction_2_had_rbf": 16.10817527770996, "TripInteraction_2_sum_cbf": 7.614634037017822,
    "AtomUpdate_2_sum": 0.9690994620323181,
    "TripInteraction_3_had_rbf": 15.01930046081543, "TripInteraction_3_sum_cbf": 7.025179862976074,
    "AtomUpdate_3_sum": 0.8903237581253052,
    "OutBlock_0_sum": 1.6437848806381226, "OutBlock_0_had": 16.161039352416992,
    "OutBlock_1_sum": 1.1077653169631958, "OutBlock_1_had": 13.54678726196289,
    "OutBlock_2_sum": 0.9477927684783936, "OutBlock_2_had": 12.754337310791016,
    "OutBlock_3_sum": 0.9059251546859741, "OutBlock_3_had": 13.484951972961426,
}
INV_SQRT_2 = 1.0 / math.sqrt(2.0)


# ------------------------------------------------------------------------------------------------ scatter helpers
def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """out[j] = Σ_{i: index[i] = j} src[i] along dim 0 (torch_scatter's ``scatter(..., reduce='sum')``)."""
    out = src.new_zeros((size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)


def ragged_range(sizes: torch.Tensor) -> torch.Tensor:
    """Concatenated ranges: sizes [1, 4, 2] → [0, 0 1 2 3, 0 1]."""
    starts = torch.cumsum(sizes, 0) - sizes
    total = int(sizes.sum())
    return torch.arange(total, device=sizes.device) - torch.repeat_interleave(starts, sizes)


# ------------------------------------------------------------------------------------------------ basic layers
class ScaledSiLU(nn.Module):
    """SiLU(x) / 0.6 (keeps the variance of a unit Gaussian input near 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * (1 / 0.6)


class Dense(nn.Module):
    """y = act(W x [+ b]); the weight lives at ``linear.weight`` as in the reference."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, activation: str | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        if activation is None:
            self._activation = nn.Identity()
        elif activation.lower() in ("swish", "silu"):
            self._activation = ScaledSiLU()
        else:
            raise ValueError(f"GemNet activation {activation!r} is not supported (only swish/silu)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._activation(self.linear(x))


class ResidualLayer(nn.Module):
    """(x + Dense(Dense(x))) / √2, both Dense without bias."""

    def __init__(self, units: int, num_layers: int = 2, activation: str | None = None):
        super().__init__()
        self.dense_mlp = nn.Sequential(*[Dense(units, units, bias=False, activation=activation)
                                         for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.dense_mlp(x)) * INV_SQRT_2


class ScalingFactor(nn.Module):
    """y · s with a fixed (non-trained) factor s stored as the parameter ``scale_factor``."""

    def __init__(self, name: str):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.tensor(GEMNET_DT_SCALE_FACTORS.get(name, 1.0)), requires_grad=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale_factor


class GaussianSmearing(nn.Module):
    """exp(−(x − μ_k)² / (2Δ²)), μ_k = linspace(start, stop, K), Δ = μ_1 − μ_0 (buffer ``offset`` = μ, as PyG)."""

    def __init__(self, start: float, stop: float, num_gaussians: int):
        super().__init__()
        spacing = torch.linspace(start, stop, num_gaussians, device="cpu")     # float32 spacing, as PyG
        self.coeff = -0.5 / float(spacing[1] - spacing[0]) ** 2
        self.register_buffer("offset", torch.linspace(start, stop, num_gaussians))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x.reshape(-1, 1) - self.offset.reshape(1, -1)
        return torch.exp(self.coeff * diff.pow(2))


class PolynomialEnvelope(nn.Module):
    """u(x) = 1 + a x^p + b x^{p+1} + c x^{p+2} for x < 1 (0 beyond), a = −(p+1)(p+2)/2, b = p(p+2), c = −p(p+1)/2."""

    def __init__(self, exponent: int):
        super().__init__()
        p = exponent
        self.p, self.a, self.b, self.c = p, -(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = 1 + self.a * x ** self.p + self.b * x ** (self.p + 1) + self.c * x ** (self.p + 2)
        return torch.where(x < 1, value, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """rbf(d) = u(d/c) · G(d/c), Gaussians on [0, 1] (the only basis MatterGen's configs use)."""

    def __init__(self, num_radial: int, cutoff: float, envelope_exponent: int = 5):
        super().__init__()
        self.inv_cutoff = 1.0 / cutoff
        self.envelope = PolynomialEnvelope(envelope_exponent)
        self.rbf = GaussianSmearing(0.0, 1.0, num_radial)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x = d * self.inv_cutoff
        return self.envelope(x)[:, None] * self.rbf(x)


class CircularBasisLayer(nn.Module):
    """(rbf(D_ca)[None], Y(cos φ_cab)) — the "efficient" form: radial part per edge, angular part per triplet.

    Y_l(z) = sqrt((2l+1)/(4π)) P_l(z), P_0 = 1, P_1 = z, l P_l = (2l−1) z P_{l−1} − (l−1) P_{l−2}.
    """

    def __init__(self, num_spherical: int, radial_basis: RadialBasis):
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis

    def angular(self, z: torch.Tensor) -> torch.Tensor:
        legendre = [torch.ones_like(z), z]
        for l in range(2, self.num_spherical):
            legendre.append(((2 * l - 1) * z * legendre[l - 1] - (l - 1) * legendre[l - 2]) / l)
        return torch.stack([math.sqrt((2 * l + 1) / (4 * math.pi)) * legendre[l]
                            for l in range(self.num_spherical)], dim=1)

    def forward(self, d_ca: torch.Tensor, cos_cab: torch.Tensor):
        return self.radial_basis(d_ca)[None], self.angular(cos_cab)


# ------------------------------------------------------------------------------------------------ triplet layers
class EfficientInteractionDownProjection(nn.Module):
    """rbf_W1[e, i, s] = Σ_r rbf[e, r] W[s, r, i]; sph2[e, s, k] = Y_s of the k-th triplet of edge e (zero padded)."""

    def __init__(self, num_spherical: int, num_radial: int, emb_size_interm: int):
        super().__init__()
        self.num_spherical = num_spherical
        self.weight = nn.Parameter(torch.empty(num_spherical, num_radial, emb_size_interm))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(num_radial))

    def forward(self, rbf, sph, id_ca, id_ragged_idx):
        num_edges = rbf.shape[1]
        rbf_w1 = torch.matmul(rbf, self.weight).permute(1, 2, 0)             # (E, interm, S)
        k_max = int(id_ragged_idx.max()) + 1 if sph.shape[0] > 0 else 0
        sph2 = sph.new_zeros(num_edges, k_max, self.num_spherical)
        sph2[id_ca, id_ragged_idx] = sph
        return rbf_w1, sph2.transpose(1, 2)                                   # (E, S, Kmax)


class EfficientInteractionBilinear(nn.Module):
    """m_ca[e, o] = Σ_{i,c} (Σ_s rbf_W1[e,i,s] Σ_k sph[e,s,k] m[trip k of e, c]) W[c, i, o]."""

    def __init__(self, emb_size: int, emb_size_interm: int, units_out: int):
        super().__init__()
        self.emb_size = emb_size
        self.weight = nn.Parameter(torch.empty(emb_size, emb_size_interm, units_out))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(emb_size * emb_size_interm))

    def forward(self, basis, m, id_reduce, id_ragged_idx):
        rbf_w1, sph = basis
        num_edges = rbf_w1.shape[0]
        k_max = int(id_ragged_idx.max()) + 1 if id_ragged_idx.numel() else 0
        m2 = m.new_zeros(num_edges, k_max, self.emb_size)
        m2[id_reduce, id_ragged_idx] = m                                      # (E, Kmax, emb)
        sum_k = torch.matmul(sph, m2)                                         # (E, S, emb)
        rbf_w1_sum_k = torch.matmul(rbf_w1, sum_k)                            # (E, interm, emb)
        return torch.matmul(rbf_w1_sum_k.permute(2, 0, 1), self.weight).sum(dim=0)   # (E, out)


class EdgeEmbedding(nn.Module):
    """m_st = Dense([h_s, h_t, m_st])."""

    def __init__(self, atom_features: int, edge_features: int, out_features: int, activation=None):
        super().__init__()
        self.dense = Dense(2 * atom_features + edge_features, out_features, bias=False, activation=activation)

    def forward(self, h, m, idx_s, idx_t):
        return self.dense(torch.cat([h[idx_s], h[idx_t], m], dim=-1))


class AtomUpdateBlock(nn.Module):
    """h'_a = MLP(s · Σ_{edges →a} m_e ⊙ W_rbf rbf_e)."""

    def __init__(self, emb_size_atom, emb_size_edge, emb_size_rbf, num_hidden, activation, name):
        super().__init__()
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge, bias=False)
        self.scale_sum = ScalingFactor(name + "_sum")
        self.layers = self.make_mlp(emb_size_edge, emb_size_atom, num_hidden, activation)

    @staticmethod
    def make_mlp(units_in, units, num_hidden, activation):
        return nn.ModuleList([Dense(units_in, units, bias=False, activation=activation)]
                             + [ResidualLayer(units, 2, activation) for _ in range(num_hidden)])

    def aggregate(self, m, rbf, idx_t, num_atoms: int):
        x = scatter_sum(m * self.dense_rbf(rbf), idx_t, num_atoms)
        x = self.scale_sum(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, h, m, rbf, idx_t):
        return self.aggregate(m, rbf, idx_t, h.shape[0])


class OutputBlock(AtomUpdateBlock):
    """Per-atom energy E_a = W_E AtomUpdate(...) and per-edge force magnitude F_e = W_F (s · MLP(m_e) ⊙ W rbf_e).

    ``seq_energy`` is the same module list as ``layers`` (the reference registers it under both names, so
    a checkpoint holds both key sets)."""

    def __init__(self, emb_size_atom, emb_size_edge, emb_size_rbf, num_hidden, num_targets, activation, name):
        super().__init__(emb_size_atom, emb_size_edge, emb_size_rbf, num_hidden, activation, name)
        self.seq_energy = self.layers
        self.out_energy = Dense(emb_size_atom, num_targets, bias=False)
        self.scale_rbf_F = ScalingFactor(name + "_had")
        self.seq_forces = self.make_mlp(emb_size_edge, emb_size_edge, num_hidden, activation)
        self.out_forces = Dense(emb_size_edge, num_targets, bias=False)
        self.dense_rbf_F = Dense(emb_size_rbf, emb_size_edge, bias=False)

    def forward(self, h, m, rbf, idx_t):
        """Only the edge forces: the energy head (``out_energy``) is trained but its output is never used by
        MatterGen's denoiser, so it is not computed here."""
        x = m
        for layer in self.seq_forces:
            x = layer(x)
        x = self.scale_rbf_F(x * self.dense_rbf_F(rbf))
        return self.out_forces(x)


class TripletInteraction(nn.Module):
    """x3_ca = (W_ca y_ca + W_ac y_{swap(ca)}) / √2, y_ca = s_cbf · Bilinear(Y, rbf_W1; down(s_rbf · D(m) ⊙ W rbf)_ba)."""

    def __init__(self, emb_size_edge, emb_size_trip, emb_size_bilinear, emb_size_rbf, emb_size_cbf, activation, name):
        super().__init__()
        self.dense_ba = Dense(emb_size_edge, emb_size_edge, bias=False, activation=activation)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_edge, bias=False)
        self.scale_rbf = ScalingFactor(name + "_had_rbf")
        self.mlp_cbf = EfficientInteractionBilinear(emb_size_trip, emb_size_cbf, emb_size_bilinear)
        self.scale_cbf_sum = ScalingFactor(name + "_sum_cbf")
        self.down_projection = Dense(emb_size_edge, emb_size_trip, bias=False, activation=activation)
        self.up_projection_ca = Dense(emb_size_bilinear, emb_size_edge, bias=False, activation=activation)
        self.up_projection_ac = Dense(emb_size_bilinear, emb_size_edge, bias=False, activation=activation)

    def forward(self, m, rbf3, cbf3, id3_ragged_idx, id_swap, id3_ba, id3_ca):
        x_ba = self.scale_rbf(self.dense_ba(m) * self.mlp_rbf(rbf3))
        x_ba = self.down_projection(x_ba)[id3_ba]
        x = self.scale_cbf_sum(self.mlp_cbf(cbf3, x_ba, id3_ca, id3_ragged_idx))
        x_ca = self.up_projection_ca(x)
        x_ac = self.up_projection_ac(x)[id_swap]
        return (x_ca + x_ac) * INV_SQRT_2


class InteractionBlockTripletsOnly(nn.Module):
    """One GemNet-T block: edge update from triplets, atom update from edges, edge update from atoms."""

    def __init__(self, emb_size_atom, emb_size_edge, emb_size_trip, emb_size_rbf, emb_size_cbf, emb_size_bil_trip,
                 num_before_skip, num_after_skip, num_concat, num_atom, activation, block):
        super().__init__()
        self.dense_ca = Dense(emb_size_edge, emb_size_edge, bias=False, activation=activation)
        self.trip_interaction = TripletInteraction(emb_size_edge, emb_size_trip, emb_size_bil_trip, emb_size_rbf,
                                                   emb_size_cbf, activation, f"TripInteraction_{block}")
        self.layers_before_skip = nn.ModuleList([ResidualLayer(emb_size_edge, 2, activation)
                                                 for _ in range(num_before_skip)])
        self.layers_after_skip = nn.ModuleList([ResidualLayer(emb_size_edge, 2, activation)
                                                for _ in range(num_after_skip)])
        self.atom_update = AtomUpdateBlock(emb_size_atom, emb_size_edge, emb_size_rbf, num_atom, activation,
                                           f"AtomUpdate_{block}")
        self.concat_layer = EdgeEmbedding(emb_size_atom, emb_size_edge, emb_size_edge, activation)
        self.residual_m = nn.ModuleList([ResidualLayer(emb_size_edge, 2, activation) for _ in range(num_concat)])

    def forward(self, h, m, rbf3, cbf3, id3_ragged_idx, id_swap, id3_ba, id3_ca, rbf_h, idx_s, idx_t):
        # x = (D(m) + x3) / √2 → residual layers;  m ← (m + x) / √2 → residual layers
        x = (self.dense_ca(m) + self.trip_interaction(m, rbf3, cbf3, id3_ragged_idx, id_swap, id3_ba, id3_ca)) * INV_SQRT_2
        for layer in self.layers_before_skip:
            x = layer(x)
        m = (m + x) * INV_SQRT_2
        for layer in self.layers_after_skip:
            m = layer(m)
        # h ← (h + AtomUpdate(m)) / √2
        h = (h + self.atom_update(h, m, rbf_h, idx_t)) * INV_SQRT_2
        # m ← (m + Res(Dense([h_s, h_t, m]))) / √2
        m2 = self.concat_layer(h, m, idx_s, idx_t)
        for layer in self.residual_m:
            m2 = layer(m2)
        return h, (m + m2) * INV_SQRT_2


class RBFBasedLatticeUpdateBlockFrac(nn.Module):
    r"""Lattice score from edge scores: S_b = Σ_{e ∈ b} (φ_e / n_b) û_e û_eᵀ (symmetric), n_b = #edges of crystal b.

    φ_e = W_out (MLP(m_e) ⊙ W_rbf rbf_e) and û_e the unit edge vector (MatterGen's
    ``edge_score_to_lattice_score_frac_symmetric``)."""

    def __init__(self, emb_size: int, activation: str, emb_size_rbf: int, emb_size_edge: int):
        super().__init__()
        self.mlp = nn.Sequential(Dense(emb_size, emb_size, activation=activation), Dense(emb_size, emb_size))
        self.dense_rbf_F = Dense(emb_size_rbf, emb_size_edge, bias=False)
        self.out_forces = Dense(emb_size_edge, 1, bias=False)

    def forward(self, edge_emb, edge_index, distance_vec, batch, rbf, num_crystals: int):
        phi = self.out_forces(self.mlp(edge_emb) * self.dense_rbf_F(rbf))[:, 0]       # (E,)
        batch_edge = batch[edge_index[0]]
        edges_per_crystal = scatter_sum(torch.ones_like(distance_vec[:, 0]), batch_edge, num_crystals)
        phi = phi / edges_per_crystal[batch_edge]
        unit = distance_vec / distance_vec.norm(dim=-1, keepdim=True)
        outer = phi[:, None, None] * (unit[:, :, None] @ unit[:, None, :])
        return scatter_sum(outer, batch_edge, num_crystals).transpose(-1, -2)


# ------------------------------------------------------------------------------------------------ the graph
def radius_graph_pbc(cart: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor, radius: float,
                     max_neighbors: int, max_cell_images_per_dim: int):
    """All periodic pairs (i, j + n) with 1e−2 Å < |r_j + n L − r_i| ≤ radius, at most ``max_neighbors`` per atom i.

    Images n ∈ [−R_k, R_k]³ with R_k = min(ceil(radius · |a_l × a_m| / V) over the batch, max_cell_images_per_dim).
    Returns edge_index [2, E] = (j, i) (row 0 the neighbour, row 1 the centre), the image offsets n [E, 3] and
    the edge count per crystal. Pairs are ordered by centre atom, then neighbour atom, then image (as OCP's code
    produces them); the neighbour limit keeps the nearest (torch.sort of the squared distances).
    """
    device = cart.device
    B = num_atoms.numel()
    n_sq = num_atoms * num_atoms
    atom_start = torch.cumsum(num_atoms, 0) - num_atoms
    pair_start = torch.cumsum(n_sq, 0) - n_sq
    pair_local = torch.arange(int(n_sq.sum()), device=device) - torch.repeat_interleave(pair_start, n_sq)
    n_of_pair = torch.repeat_interleave(num_atoms, n_sq)
    start_of_pair = torch.repeat_interleave(atom_start, n_sq)
    index1 = torch.div(pair_local, n_of_pair, rounding_mode="floor") + start_of_pair    # centre i
    index2 = pair_local % n_of_pair + start_of_pair                                     # neighbour j
    pos1, pos2 = cart[index1], cart[index2]

    # images needed along a_k: ceil(r / h_k), h_k the plane spacing = V / |a_l × a_m|
    cross_23 = torch.cross(lattice[:, 1], lattice[:, 2], dim=-1)
    volume = torch.sum(lattice[:, 0] * cross_23, dim=-1, keepdim=True)
    crosses = [cross_23, torch.cross(lattice[:, 2], lattice[:, 0], dim=-1), torch.cross(lattice[:, 0], lattice[:, 1], dim=-1)]
    reps = [min(int(torch.ceil(radius * torch.norm(c / volume, p=2, dim=-1)).max()), max_cell_images_per_dim)
            for c in crosses]
    images = torch.cartesian_prod(*[torch.arange(-r, r + 1, device=device, dtype=torch.float) for r in reps])
    num_images = images.shape[0]
    # Cartesian shift of image n in crystal b: Lᵀ n  → (B, 3, num_images), repeated per pair
    shifts = torch.bmm(lattice.transpose(1, 2), images.t().reshape(1, 3, num_images).expand(B, -1, -1))
    shifts = torch.repeat_interleave(shifts, n_sq, dim=0)
    d2 = torch.sum((pos1.reshape(-1, 3, 1) - (pos2.reshape(-1, 3, 1) + shifts)) ** 2, dim=1).reshape(-1)
    keep = (d2 <= radius * radius) & (d2 > 1e-4)
    index1 = index1.reshape(-1, 1).repeat(1, num_images).reshape(-1)[keep]
    index2 = index2.reshape(-1, 1).repeat(1, num_images).reshape(-1)[keep]
    offsets = images.reshape(1, num_images, 3).repeat(len(keep) // num_images, 1, 1).reshape(-1, 3)[keep]
    d2 = d2[keep]

    # at most max_neighbors per centre atom: the nearest ones
    total_atoms = int(num_atoms.sum())
    neighbours = torch.bincount(index1, minlength=total_atoms)
    kept_per_atom = neighbours.clamp(max=max_neighbors)
    atom_crystal = torch.repeat_interleave(torch.arange(B, device=device), num_atoms)
    edges_per_crystal = scatter_sum(kept_per_atom, atom_crystal, B)
    max_found = int(neighbours.max()) if neighbours.numel() else 0
    if max_found > max_neighbors > 0:
        first = torch.cumsum(neighbours, 0) - neighbours
        slot = index1 * max_found + torch.arange(len(index1), device=device) - torch.repeat_interleave(first, neighbours)
        table = torch.full([total_atoms * max_found], float("inf"), device=device)
        table.index_copy_(0, slot, d2)
        table, order = torch.sort(table.reshape(total_atoms, max_found), dim=1)
        table, order = table[:, :max_neighbors], order[:, :max_neighbors]
        order = (order + first.reshape(-1, 1))[torch.isfinite(table)]
        mask = torch.zeros(len(index1), dtype=torch.bool, device=device)
        mask[order] = True
        index1, index2, offsets = index1[mask], index2[mask], offsets[mask]
    return torch.stack([index2, index1]), offsets, edges_per_crystal


def repeat_blocks_swap(block_sizes: torch.Tensor) -> torch.Tensor:
    """Index that swaps every edge with its counter edge, for edges laid out per crystal as
    [forward block (size s), backward block (size s)]: [s..2s−1, 0..s−1] shifted by the crystal's start."""
    starts = torch.cumsum(2 * block_sizes, 0) - 2 * block_sizes
    parts = []
    for start, size in zip(starts.tolist(), block_sizes.tolist()):
        parts.append(torch.arange(start + size, start + 2 * size, device=block_sizes.device))
        parts.append(torch.arange(start, start + size, device=block_sizes.device))
    return torch.cat(parts) if parts else block_sizes.new_zeros(0)


def symmetric_edges(edge_index, offsets, edges_per_crystal, distance, vector):
    """Keep one direction of every edge (j < i, or j == i with the image n < 0 lexicographically), then
    append its reverse (i, j, −n, d, −v); per crystal the edges are [kept block, reversed block]."""
    same = edge_index[0] == edge_index[1]
    earlier = ((offsets[:, 0] < 0) | ((offsets[:, 0] == 0) & (offsets[:, 1] < 0))
               | ((offsets[:, 0] == 0) & (offsets[:, 1] == 0) & (offsets[:, 2] < 0)))
    keep = (edge_index[0] < edge_index[1]) | (same & earlier)
    fwd = edge_index[:, keep]
    edge_crystal = torch.repeat_interleave(torch.arange(edges_per_crystal.numel(), device=edge_index.device),
                                           edges_per_crystal)[keep]
    half = torch.bincount(edge_crystal, minlength=edges_per_crystal.numel())
    # reorder [all fwd, all bwd] into per-crystal [fwd_b, bwd_b]
    n_fwd = fwd.shape[1]
    fwd_start = torch.cumsum(half, 0) - half
    order = []
    for start, size in zip(fwd_start.tolist(), half.tolist()):
        order.append(torch.arange(start, start + size, device=edge_index.device))
        order.append(torch.arange(n_fwd + start, n_fwd + start + size, device=edge_index.device))
    order = torch.cat(order) if order else half.new_zeros(0)

    def both(x, sign):
        x = x[keep]
        return torch.cat([x, sign * x])[order]

    edge_index = torch.cat([fwd, fwd.flip(0)], dim=1)[:, order]
    return edge_index, both(offsets, -1), 2 * half, both(distance, 1), both(vector, -1)


def triplets(edge_index: torch.Tensor, num_atoms: int):
    """For every edge c→a (index e_ca) every other edge b→a into the same atom a (index e_ba).

    Ordered by e_ca, then by the source atom of e_ba (what indexing MatterGen's sparse adjacency by target
    atom gives; only the order of the sum over b changes with it, not its value). Returns
    (id3_ba, id3_ca, id3_ragged_idx) with id3_ragged_idx the rank of the triplet within its e_ca."""
    idx_s, idx_t = edge_index
    num_edges = idx_t.numel()
    # edges grouped by target atom, then by source atom (a CSR adjacency's order; ties keep edge order)
    by_target = torch.sort(idx_t * num_atoms + idx_s, stable=True).indices
    per_atom = torch.bincount(idx_t, minlength=num_atoms)
    atom_start = torch.cumsum(per_atom, 0) - per_atom
    fan = per_atom[idx_t]                                                 # edges into the target of each edge
    id3_ca = torch.repeat_interleave(torch.arange(num_edges, device=idx_t.device), fan)
    rank = ragged_range(fan)
    id3_ba = by_target[torch.repeat_interleave(atom_start[idx_t], fan) + rank]
    keep = id3_ba != id3_ca
    id3_ba, id3_ca = id3_ba[keep], id3_ca[keep]
    return id3_ba, id3_ca, ragged_range(torch.bincount(id3_ca, minlength=num_edges))


# ------------------------------------------------------------------------------------------------ GemNet-T
class GemNetT(nn.Module):
    """GemNet-T with MatterGen's additions: a per-crystal latent z concatenated to the atom embedding, the
    edge embedding extended by the cosines between each edge and the three lattice vectors, and a lattice
    score read out of the edges after every block. With ``condition_on_adapt`` it is MatterGen's GemNetTCtrl:
    before block i, h ← h + Σ_p mask_p · Mix_{p,i}(MLP_{p,i}([h, e_p]))."""

    def __init__(self, atom_embedding: nn.Module, latent_dim: int, num_targets: int = 1, num_spherical: int = 7,
                 num_radial: int = 128, num_blocks: int = 3, emb_size_atom: int = 512, emb_size_edge: int = 512,
                 emb_size_trip: int = 64, emb_size_rbf: int = 16, emb_size_cbf: int = 16,
                 emb_size_bil_trip: int = 64, num_before_skip: int = 1, num_after_skip: int = 2, num_concat: int = 1,
                 num_atom: int = 3, cutoff: float = 6.0, max_neighbors: int = 50, envelope_exponent: int = 5,
                 activation: str = "swish", max_cell_images_per_dim: int = 5,
                 condition_on_adapt: list[str] | None = None):
        super().__init__()
        self.num_blocks = num_blocks
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.max_cell_images_per_dim = max_cell_images_per_dim
        self.angle_edge_emb = nn.Sequential(nn.Linear(emb_size_edge + 3, emb_size_edge), nn.ReLU(),
                                            nn.Linear(emb_size_edge, emb_size_edge))
        self.radial_basis = RadialBasis(num_radial, cutoff, envelope_exponent)
        self.cbf_basis3 = CircularBasisLayer(num_spherical, RadialBasis(num_radial, cutoff, envelope_exponent))
        self.lattice_out_blocks = nn.ModuleList([
            RBFBasedLatticeUpdateBlockFrac(emb_size_edge, activation, emb_size_rbf, emb_size_edge)
            for _ in range(num_blocks + 1)])
        self.mlp_rbf_lattice = Dense(num_radial, emb_size_rbf, bias=False)
        self.mlp_rbf3 = Dense(num_radial, emb_size_rbf, bias=False)
        self.mlp_cbf3 = EfficientInteractionDownProjection(num_spherical, num_radial, emb_size_cbf)
        self.mlp_rbf_h = Dense(num_radial, emb_size_rbf, bias=False)
        self.mlp_rbf_out = Dense(num_radial, emb_size_rbf, bias=False)
        self.atom_emb = atom_embedding
        self.atom_latent_emb = nn.Linear(atom_embedding.emb_size + latent_dim, emb_size_atom)
        self.edge_emb = EdgeEmbedding(emb_size_atom, num_radial, emb_size_edge, activation)
        self.out_blocks = nn.ModuleList([
            OutputBlock(emb_size_atom, emb_size_edge, emb_size_rbf, num_atom, num_targets, activation, f"OutBlock_{i}")
            for i in range(num_blocks + 1)])
        self.int_blocks = nn.ModuleList([
            InteractionBlockTripletsOnly(emb_size_atom, emb_size_edge, emb_size_trip, emb_size_rbf, emb_size_cbf,
                                         emb_size_bil_trip, num_before_skip, num_after_skip, num_concat, num_atom,
                                         activation, i + 1)
            for i in range(num_blocks)])
        self.condition_on_adapt = list(condition_on_adapt or [])
        if self.condition_on_adapt:
            self.cond_adapt_layers = nn.ModuleDict()
            self.cond_mixin_layers = nn.ModuleDict()
            for name in self.condition_on_adapt:
                self.cond_adapt_layers[name] = nn.ModuleList([
                    nn.Sequential(nn.Linear(2 * emb_size_atom, emb_size_atom), nn.ReLU(),
                                  nn.Linear(emb_size_atom, emb_size_atom)) for _ in range(num_blocks)])
                mixins = nn.ModuleList([nn.Linear(emb_size_atom, emb_size_atom, bias=False) for _ in range(num_blocks)])
                for mixin in mixins:
                    nn.init.zeros_(mixin.weight)
                self.cond_mixin_layers[name] = mixins

    def interaction_graph(self, cart, lattice, num_atoms):
        """Edges, distances, unit vectors (pointing from the centre to the neighbour's image, negated so that
        aggregation runs over the target index), counter-edge swap index and triplets."""
        edge_index, offsets, edges_per_crystal = radius_graph_pbc(
            cart, lattice, num_atoms, self.cutoff, self.max_neighbors, self.max_cell_images_per_dim)
        j, i = edge_index
        lattice_per_edge = torch.repeat_interleave(lattice, edges_per_crystal, dim=0)
        vec = cart[j] - cart[i] + torch.einsum("ei,eij->ej", offsets.float(), lattice_per_edge)
        dist = vec.norm(dim=-1)
        unit = -vec / dist[:, None]
        edge_index, offsets, edges_per_crystal, dist, unit = symmetric_edges(
            edge_index, offsets, edges_per_crystal, dist, unit)
        block_sizes = edges_per_crystal // 2
        id_swap = repeat_blocks_swap(block_sizes[block_sizes > 0])
        id3_ba, id3_ca, id3_ragged_idx = triplets(edge_index, int(num_atoms.sum()))
        return edge_index, dist, unit, id_swap, id3_ba, id3_ca, id3_ragged_idx

    def forward(self, z, frac_coords, atom_types, num_atoms, batch, lattice, cond_adapt=None, cond_adapt_mask=None):
        """Returns (node embeddings h [n, emb], Cartesian force-like vectors [n, 3], lattice score [B, 3, 3])."""
        cart = torch.einsum("bi,bij->bj", frac_coords, torch.repeat_interleave(lattice, num_atoms, dim=0))
        edge_index, dist, unit, id_swap, id3_ba, id3_ca, id3_ragged_idx = self.interaction_graph(cart, lattice, num_atoms)
        idx_s, idx_t = edge_index
        n_atoms, n_crystals = atom_types.shape[0], lattice.shape[0]

        cos_cab = torch.sum(unit[id3_ca] * unit[id3_ba], dim=-1).clamp(min=-1, max=1)
        rad_cbf3, cbf3 = self.cbf_basis3(dist, cos_cab)
        rbf = self.radial_basis(dist)

        h = self.atom_latent_emb(torch.cat([self.atom_emb(atom_types), z[batch]], dim=1))
        m = self.edge_emb(h, rbf, idx_s, idx_t)
        cosines = torch.cosine_similarity(unit[:, None], lattice[batch[idx_s]], dim=-1)      # (E, 3)
        m = self.angle_edge_emb(torch.cat([m, cosines], dim=-1))

        rbf3 = self.mlp_rbf3(rbf)
        cbf3 = self.mlp_cbf3(rad_cbf3, cbf3, id3_ca, id3_ragged_idx)
        rbf_h = self.mlp_rbf_h(rbf)
        rbf_out = self.mlp_rbf_out(rbf)
        distance_vec = unit * dist[:, None]

        forces_e = self.out_blocks[0](h, m, rbf_out, idx_t)
        lattice_score = self.lattice_out_blocks[0](m, edge_index, distance_vec, batch, self.mlp_rbf_lattice(rbf),
                                                   n_crystals)
        if self.condition_on_adapt:
            per_atom = {p: cond_adapt[p][batch] for p in self.condition_on_adapt}
            use = {p: 1.0 - cond_adapt_mask[p][batch].float() for p in self.condition_on_adapt}  # 1 = conditional
        for i in range(self.num_blocks):
            if self.condition_on_adapt:
                h_adapt = torch.zeros_like(h)
                for p in self.condition_on_adapt:
                    mixed = self.cond_mixin_layers[p][i](self.cond_adapt_layers[p][i](torch.cat([h, per_atom[p]], -1)))
                    h_adapt = h_adapt + use[p] * mixed
                h = h + h_adapt
            h, m = self.int_blocks[i](h, m, rbf3, cbf3, id3_ragged_idx, id_swap, id3_ba, id3_ca, rbf_h, idx_s, idx_t)
            f = self.out_blocks[i + 1](h, m, rbf_out, idx_t)
            forces_e = forces_e + f
            lattice_score = lattice_score + self.lattice_out_blocks[i + 1](
                m, edge_index, distance_vec, batch, self.mlp_rbf_lattice(rbf), n_crystals)
        # F_a = Σ_{edges e → a} F_e · û_e
        forces = scatter_sum(forces_e[:, :, None] * unit[:, None, :], idx_t, n_atoms).squeeze(1)
        return h, forces, lattice_score


class AtomEmbedding(nn.Module):
    """h_a = E[Z_a − 1]; 101 rows with the mask type (Z = 101)."""

    def __init__(self, emb_size: int, with_mask_type: bool = True, max_atomic_num: int = 100):
        super().__init__()
        self.emb_size = emb_size
        self.embeddings = nn.Embedding(max_atomic_num + int(with_mask_type), emb_size)
        nn.init.uniform_(self.embeddings.weight, -math.sqrt(3), math.sqrt(3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.embeddings(z - 1)
