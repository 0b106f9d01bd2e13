"""Diffusion core: one module per noising process and the joint wrapper (MatterGen ref §2–§5).

- :mod:`~mattergen_kit.diffusion.atom_types` — absorbing-state D3PM over 101 classes (``MaskDiffusion``)
- :mod:`~mattergen_kit.diffusion.coords` — wrapped VE SDE on the 3-torus (``WrappedVESDE``)
- :mod:`~mattergen_kit.diffusion.lattice` — VP SDE toward μ_N (``LatticeVPSDE``)
- :mod:`~mattergen_kit.diffusion.joint` — ``DenoiserOutput`` and ``CrystalDiffusion`` (corrupt + losses)
"""
from mattergen_kit.diffusion.atom_types import ALLOWED_Z, MASK_CLASS, NUM_CLASSES, MaskDiffusion, allowed_classes_mask, mask_logits
from mattergen_kit.diffusion.coords import WrappedVESDE, wrap, wrapped_normal_score
from mattergen_kit.diffusion.joint import ALL_FIELDS, CSP_FIELDS, CrystalDiffusion, DenoiserOutput
from mattergen_kit.diffusion.lattice import AVERAGE_DENSITY, LatticeVPSDE, symmetric_noise

__all__ = [
    "ALLOWED_Z", "ALL_FIELDS", "AVERAGE_DENSITY", "CSP_FIELDS", "CrystalDiffusion", "DenoiserOutput",
    "LatticeVPSDE", "MASK_CLASS", "MaskDiffusion", "NUM_CLASSES", "WrappedVESDE", "allowed_classes_mask",
    "mask_logits", "symmetric_noise", "wrap", "wrapped_normal_score",
]
