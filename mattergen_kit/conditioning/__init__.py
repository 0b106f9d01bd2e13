"""Property conditioning (MatterGen ref §8–§9): property registry, embeddings, the zero-initialised adapter,
labels and fine-tuning. See docs/architecture.md and the module docstrings for the formulas."""
from mattergen_kit.conditioning.adapter import Adapter, PropertyEmbedding, adapter_from_meta, attach_adapter
from mattergen_kit.conditioning.conditions import batch_conditions, drop_conditions, fit_property_specs
from mattergen_kit.conditioning.properties import PROPERTIES, PropertySpec, check_conditions, element_symbols, get_spec

__all__ = ["Adapter", "PropertyEmbedding", "adapter_from_meta", "attach_adapter", "attach_labels", "batch_conditions",
           "drop_conditions", "fit_property_specs", "PROPERTIES",
           "PropertySpec", "check_conditions", "element_symbols", "get_spec"]


def __getattr__(name):  # labels pull in pandas/pymatgen helpers: import on first use
    if name == "attach_labels":
        from mattergen_kit.conditioning.labels import attach_labels

        return attach_labels
    raise AttributeError(f"module 'mattergen_kit.conditioning' has no attribute {name!r}")
