"""CHGNet's message-passing layers with their first matrix product moved before the gather (same function, fewer FLOPs).

Each CHGNet interaction layer builds, for every directed bond (AtomConv) or every bond pair / angle (BondConv,
AngleUpdate), the concatenation of gathered features and sends it through a gated MLP whose first layer is linear:

    AtomConv:     x_e = [a_center(e) | b_bond(e) | a_neighbour(e)]                         (192 = 3 × 64)
    BondConv,
    AngleUpdate:  x_t = [b_i(t) | b_j(t) | θ_t | a_center(t)]                              (256 = 4 × 64)
    first layer:  h = W x + c = c + Σ_k W_k g_k[idx_k]        (W_k: the columns of W that meet part k)

A gather commutes with a linear map, W_k (g_k[idx]) = (W_k g_k)[idx], so each W_k is applied to the small table g_k
(atoms, or bonds) and the product is gathered, instead of multiplying every row of the large gathered matrix. The
core and gate MLPs share their input, so their first layers are one product with [W_core; W_gate]. Per directed bond
the first layers of AtomConv cost 64·64 multiply-adds (its bond part; on undirected bonds) instead of 2·192·64, and
per angle those of BondConv and AngleUpdate 64·128 instead of 2·256·64. Everything after the first layer (activation,
second layer, layer norms, gating, bond weights, aggregation, residual, norms) is CHGNet's own code path, unchanged.

The result is the same function up to float32 round-off (the sum runs in a different order):
``tests/test_evaluation_scale.py`` compares energies, forces and stresses with CHGNet's own layers. Measured on 32
generated crystals (1 thread): ``benchmarks/bench_relax_batched.py``.

:func:`install` patches the layers of one loaded model instance (``forward`` of each AtomConv / BondConv /
AngleUpdate module); :func:`uninstall` restores them. It refuses, leaving the model as it was, when a layer does not
have the structure this was written against (CHGNet 0.3–0.4: a GatedMLP whose MLPs start with optional Dropout(p=0)
then Linear).
"""

from __future__ import annotations

import types

__all__ = ["install", "uninstall", "installed"]


def _first_linear(mlp):
    """Index of the first ``Linear`` of an MLP's ``layers``, the layers before it all being no-ops in eval (Dropout)."""
    import torch.nn as nn

    for i, layer in enumerate(mlp.layers):
        if isinstance(layer, nn.Linear):
            return i
        if not isinstance(layer, nn.Dropout):
            return None
    return None


def _supported(gated) -> bool:
    core, gate = gated.mlp_core, gated.mlp_gate
    i, j = _first_linear(core), _first_linear(gate)
    return (i is not None and j is not None and core.layers[i].in_features == gate.layers[j].in_features
            and core.layers[i].bias is not None and gate.layers[j].bias is not None)


def gated_mlp_of_parts(gated, parts):
    """``gated(torch.cat([g[idx] if idx is not None else g for g, idx in parts], dim=1))`` with the first linear
    layers of core and gate applied to each table ``g`` before its gather ``idx`` (module docstring)."""
    import torch
    import torch.nn.functional as F

    core, gate = gated.mlp_core, gated.mlp_gate
    i, j = _first_linear(core), _first_linear(gate)
    lin_core, lin_gate = core.layers[i], gate.layers[j]
    hidden = lin_core.out_features
    weight = torch.cat([lin_core.weight, lin_gate.weight], dim=0)        # [W_core; W_gate]: (2h, in)
    bias = torch.cat([lin_core.bias, lin_gate.bias])                      # c
    h, col = None, 0
    for table, index in parts:                                            # h = c + Σ_k (W_k g_k)[idx_k]
        width = table.shape[1]
        part = F.linear(table, weight[:, col:col + width])
        part = part if index is None else part.index_select(0, index)
        h = part + bias if h is None else h.add_(part)                    # (in place: one row table, not one per part)
        col += width
    if col != lin_core.in_features:
        raise ValueError(f"parts give {col} input features, the layer takes {lin_core.in_features}")
    x_core, x_gate = h[:, :hidden], h[:, hidden:]
    for layer in core.layers[i + 1:]:
        x_core = layer(x_core)
    for layer in gate.layers[j + 1:]:
        x_gate = layer(x_gate)
    if gated.norm is None:                                                # GatedMLP.forward from here on
        return gated.activation(x_core) * gated.sigmoid(x_gate)
    return gated.activation(gated.bn1(x_core)) * gated.sigmoid(gated.bn2(x_gate))


def _atom_conv_forward(self, atom_feas, bond_feas, bond_weights, atom_graph, directed2undirected):
    from chgnet.model.functions import aggregate

    # messages = twoBody_atom([a_center | b_bond | a_neighbour]) · w_bond, summed onto the centre atoms
    messages = gated_mlp_of_parts(self.twoBody_atom, [(atom_feas, atom_graph[:, 0]),
                                                      (bond_feas, directed2undirected),
                                                      (atom_feas, atom_graph[:, 1])])
    messages = messages * bond_weights.index_select(0, directed2undirected)
    new_atom_feas = aggregate(messages, atom_graph[:, 0], average=False, num_owner=len(atom_feas))
    return _output(self, new_atom_feas, atom_feas, self.atom_norm)


def _output(layer, new, old, norm):
    """The end of CHGNet's AtomConv / BondConv: output linear layer, residual, normalisation."""
    if layer.use_mlp_out:
        new = layer.mlp_out(new)
    if layer.resnet:
        new = new + old
    return new if norm is None else norm(new)


def _angle_parts(atom_feas, bond_feas, angle_feas, bond_graph):
    """[b_i | b_j | θ | a_center] of every angle, as tables and gathers."""
    return [(bond_feas, bond_graph[:, 1]), (bond_feas, bond_graph[:, 2]), (angle_feas, None),
            (atom_feas, bond_graph[:, 0])]


def _bond_conv_forward(self, atom_feas, bond_feas, bond_weights, angle_feas, bond_graph):
    from chgnet.model.functions import aggregate

    update = gated_mlp_of_parts(self.twoBody_bond, _angle_parts(atom_feas, bond_feas, angle_feas, bond_graph))
    update = (update * bond_weights.index_select(0, bond_graph[:, 1])
              * bond_weights.index_select(0, bond_graph[:, 2]))
    new_bond_feas = aggregate(update, bond_graph[:, 1], average=False, num_owner=len(bond_feas))
    return _output(self, new_bond_feas, bond_feas, self.bond_norm)


def _angle_update_forward(self, atom_feas, bond_feas, angle_feas, bond_graph):
    new_angle_feas = gated_mlp_of_parts(self.twoBody_bond, _angle_parts(atom_feas, bond_feas, angle_feas, bond_graph))
    if self.resnet:
        new_angle_feas = new_angle_feas + angle_feas
    if self.angle_norm is not None:
        new_angle_feas = self.angle_norm(new_angle_feas)
    return new_angle_feas


_FORWARDS = {"AtomConv": ("twoBody_atom", _atom_conv_forward), "BondConv": ("twoBody_bond", _bond_conv_forward),
             "AngleUpdate": ("twoBody_bond", _angle_update_forward)}


def _layers(model):
    for name in ("atom_conv_layers", "bond_conv_layers", "angle_layers"):
        for layer in getattr(model, name, None) or []:
            if layer is not None:
                yield layer


def install(model) -> bool:
    """Give every AtomConv, BondConv and AngleUpdate layer of ``model`` (a loaded CHGNet) the factorised forward;
    returns True, or False (the model untouched) if any layer is not of the structure this module expects."""
    layers = list(_layers(model))
    if not layers:
        return False
    for layer in layers:
        kind = _FORWARDS.get(type(layer).__name__)
        if kind is None or not _supported(getattr(layer, kind[0])):
            return False
    for layer in layers:
        layer.forward = types.MethodType(_FORWARDS[type(layer).__name__][1], layer)
    return True


def uninstall(model) -> None:
    """Back to CHGNet's own layer code."""
    for layer in _layers(model):
        layer.__dict__.pop("forward", None)


def installed(model) -> bool:
    return any("forward" in layer.__dict__ for layer in _layers(model))
