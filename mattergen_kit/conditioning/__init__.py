"""Property conditioning (MatterGen ref §8–§9): property registry, embeddings, the zero-initialised adapter,
labels and fine-tuning. See docs/architecture.md and the module docstrings for the formulas."""
from mattergen_kit.conditioning.adapter import Adapter, PropertyEmbedding, attach_adapter
from mattergen_kit.conditioning.conditions import batch_conditions, drop_conditions
from mattergen_kit.conditioning.properties import PROPERTIES, PropertySpec, check_conditions, element_symbols, get_spec

__all__ = ["Adapter", "PropertyEmbedding", "attach_adapter", "batch_conditions", "drop_conditions", "PROPERTIES",
           "PropertySpec", "check_conditions", "element_symbols", "get_spec"]
