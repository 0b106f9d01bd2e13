"""The denoiser network (docs/architecture.md, "Model")."""
from mattergen_kit.model.denoiser import CrystalDenoiser, DenoiserConfig, count_parameters, fully_connected_edges

__all__ = ["CrystalDenoiser", "DenoiserConfig", "count_parameters", "fully_connected_edges"]
