r"""The joint crystal diffusion: atom types (D3PM) × fractional coordinates (wrapped VE) × lattice (VP).

Training step (MatterGen ref §5, §14.1)::

    t ~ U(1e−5, 1), one per crystal, shared by all fields
    f_t = wrap(f_0 + σ(t;N) ε)                   target_f = σ · wrapped-normal score   (coords.py)
    L_t = α L_0 + (1−α) μ_N + std_t Z_sym         target_L = −Z_sym                      (lattice.py)
    x_t ~ q(x_k | x_0),  k = floor(999 t) + 1     KL / CE at k − 1 = 0, + 0.01 CE       (atom_types.py)
    loss = mean_crystals( L_types + 0.1 · L_coords + 1 · L_lattice )

with L_types = Σ_atoms hybrid loss, L_coords = Σ_atoms mean_xyz (pred − target)², L_lattice = mean_9
(pred − target)². The reported ``loss_types`` / ``loss_coords`` / ``loss_lattice`` are the unweighted
per-crystal losses averaged over crystals; ``loss`` applies the field weights.

Random draws in :meth:`CrystalDiffusion.corrupt` happen in a fixed order from one generator: coordinate
noise (ΣN × 3), lattice noise (B × 3 × 3), then the type masks (ΣN) — so a fixed generator gives a fixed
corruption.

CSP mode: ``fields=("coords", "lattice")`` drops the atom-type process; the noisy batch keeps the true
atom types and ``loss_types`` is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mattergen_kit.data import MASK_Z, CrystalBatch
from mattergen_kit.diffusion.atom_types import MaskDiffusion
from mattergen_kit.diffusion.coords import WrappedVESDE
from mattergen_kit.diffusion.lattice import LatticeVPSDE

ALL_FIELDS = ("atom_types", "coords", "lattice")
CSP_FIELDS = ("coords", "lattice")


@dataclass
class DenoiserOutput:
    """What a denoiser returns (docs/architecture.md)."""

    type_logits: torch.Tensor    # (ΣN, 101) logits of p(x0 | x_t); class = Z − 1, 100 = mask
    coord_score: torch.Tensor    # (ΣN, 3)  σ_t · score of the wrapped normal, fractional space
    lattice_score: torch.Tensor  # (B, 3, 3) std_t · score of the lattice, symmetric


class CrystalDiffusion:
    """Owns the three noising processes and the joint training loss.

    Parameters
    ----------
    atom_types, coords, lattice:
        The processes (defaults: MatterGen's settings). Pass ``LatticeVPSDE(density=ρ)`` to use the
        density recomputed from the training data.
    fields:
        Which fields are diffused: all three (de novo generation) or ``("coords", "lattice")`` (CSP).
    weights:
        Field weights of the total loss (MatterGen: types 1, coords 0.1, lattice 1).
    min_t:
        Lower end of the training-time distribution U(min_t, 1).
    """

    def __init__(self, atom_types: MaskDiffusion | None = None, coords: WrappedVESDE | None = None,
                 lattice: LatticeVPSDE | None = None, fields: tuple[str, ...] = ALL_FIELDS,
                 weights: dict[str, float] | None = None, min_t: float = 1e-5):
        unknown = set(fields) - set(ALL_FIELDS)
        if unknown or not {"coords", "lattice"} <= set(fields):
            raise ValueError(f"fields must be {ALL_FIELDS} or {CSP_FIELDS}, got {fields}")
        self.atom_types = atom_types if atom_types is not None else MaskDiffusion()
        self.coords = coords if coords is not None else WrappedVESDE()
        self.lattice = lattice if lattice is not None else LatticeVPSDE()
        self.fields = tuple(f for f in ALL_FIELDS if f in fields)
        self.weights = {"atom_types": 1.0, "coords": 0.1, "lattice": 1.0, **(weights or {})}
        self.min_t = min_t

    @property
    def diffuse_types(self) -> bool:
        return "atom_types" in self.fields

    def __repr__(self) -> str:
        return (f"CrystalDiffusion(fields={self.fields}, weights={self.weights}, "
                f"density={self.lattice.density})")

    # ------------------------------------------------------------------ time
    def sample_time(self, num_crystals: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """t ~ U(min_t, 1), one per crystal (B,)."""
        u = torch.rand(num_crystals, generator=generator, device=device)
        return self.min_t + (1.0 - self.min_t) * u

    # ------------------------------------------------------------------ forward
    def corrupt(self, batch: CrystalBatch, t: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[CrystalBatch, dict[str, Any]]:
        """Noise a clean batch to time t (B,). Returns (noisy batch, targets).

        targets: ``coords`` (ΣN,3) σ·score target, ``lattice`` (B,3,3) = −Z_sym, ``sigma_coords``
        (ΣN,) per-atom σ(t;N), ``std_lattice`` (B,), ``coord_noise`` ε, ``lattice_noise`` Z_sym, and with
        types diffused ``type_step`` (ΣN,) the D3PM step k of each atom.
        """
        t = torch.as_tensor(t, dtype=torch.float32, device=batch.device)
        bidx = batch.batch_idx
        # fractional coordinates: f_t = wrap(f_0 + σ ε)
        sigma = self.coords.sigma(t, batch.num_atoms)                          # (B,)
        sigma_atom = sigma[bidx]
        f_t, eps = self.coords.sample_marginal(batch.frac_coords, sigma_atom, generator)
        target_f = self.coords.target(f_t, batch.frac_coords, sigma_atom)      # σ · score
        # lattice: L_t = α L_0 + (1−α) μ_N + std Z_sym
        L_t, z_sym = self.lattice.sample_marginal(batch.lattice, t, batch.num_atoms, generator)
        targets: dict[str, Any] = {
            "coords": target_f, "lattice": self.lattice.target(z_sym), "sigma_coords": sigma_atom,
            "std_lattice": self.lattice.std(t, batch.num_atoms), "coord_noise": eps, "lattice_noise": z_sym,
        }
        # atom types: x_t ~ q(x_k | x_0), k = floor(999 t) + 1
        types = batch.atom_types
        if self.diffuse_types:
            k_atom = self.atom_types.corruption_step(t)[bidx]
            x_k = self.atom_types.q_sample(batch.atom_types - 1, k_atom, generator)
            types = x_k + 1                                                    # class → Z (mask → 101)
            targets["type_step"] = k_atom
        noisy = batch.replace(atom_types=types, frac_coords=f_t, lattice=L_t)
        return noisy, targets

    # ------------------------------------------------------------------ loss
    def losses(self, output: DenoiserOutput, batch: CrystalBatch, noisy: CrystalBatch,
               targets: dict[str, Any], t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-crystal losses averaged over crystals: loss, loss_types, loss_coords, loss_lattice."""
        B, bidx = batch.num_crystals, batch.batch_idx
        coords = self.coords.loss_per_crystal(output.coord_score, targets["coords"], bidx, B)
        lattice = self.lattice.loss_per_crystal(output.lattice_score, targets["lattice"])
        if self.diffuse_types:
            k = targets.get("type_step")
            if k is None:
                k = self.atom_types.corruption_step(torch.as_tensor(t, device=batch.device))[bidx]
            per_atom = self.atom_types.loss_per_atom(batch.atom_types - 1, noisy.atom_types - 1,
                                                     output.type_logits, k)
            types = torch.zeros(B, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, bidx, per_atom)
        else:
            types = torch.zeros(B, dtype=coords.dtype, device=coords.device)
        w = self.weights
        total = w["atom_types"] * types + w["coords"] * coords + w["lattice"] * lattice
        return {"loss": total.mean(), "loss_types": types.mean(), "loss_coords": coords.mean(),
                "loss_lattice": lattice.mean()}

    def training_losses(self, model, batch: CrystalBatch, generator: torch.Generator | None = None,
                        conditions: dict | None = None, use_condition: torch.Tensor | None = None
                        ) -> dict[str, torch.Tensor]:
        """sample_time + corrupt + model + losses (the model is called in its current train/eval mode)."""
        t = self.sample_time(batch.num_crystals, generator, batch.device)
        noisy, targets = self.corrupt(batch, t, generator)
        output = model(noisy, t, conditions=conditions, use_condition=use_condition)
        return self.losses(output, batch, noisy, targets, t)


__all__ = ["DenoiserOutput", "CrystalDiffusion", "ALL_FIELDS", "CSP_FIELDS", "MASK_Z"]
