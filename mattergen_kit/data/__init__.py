"""Data: the CrystalBatch object, canonical cells, datasets and loaders."""
from mattergen_kit.data.crystal_batch import MASK_Z, MAX_ATOMIC_NUM, CrystalBatch, canonicalize_structure, symmetric_polar_factor

__all__ = ["CrystalBatch", "MASK_Z", "MAX_ATOMIC_NUM", "canonicalize_structure", "symmetric_polar_factor"]
