"""mattergen_kit: generate inorganic crystals with a MatterGen-style diffusion model.

Public API::

    from mattergen_kit import CrystalBatch, load_model, generate, evaluate
    from mattergen_kit import datasets          # load_bundled, load_csv, load_materials_project, ...
"""

from mattergen_kit.data.crystal_batch import CrystalBatch, canonicalize_structure, symmetric_polar_factor

from mattergen_kit.constants import VERSION as __version__  # noqa: E402

__all__ = ["CrystalBatch", "canonicalize_structure", "symmetric_polar_factor", "load_model", "generate",
           "evaluate", "finetune", "datasets", "load_mattergen", "fetch_model", "__version__"]


def __getattr__(name):  # lazy: keep `import mattergen_kit` fast and free of heavy optional imports
    if name == "datasets":
        import importlib

        return importlib.import_module("mattergen_kit.datasets")
    if name in ("load_model", "generate"):
        import mattergen_kit.mattergen_models  # noqa: F401  (registers MatterGen's released models with load_model)
        from mattergen_kit import generation

        return getattr(generation, name)
    if name in ("load_mattergen", "fetch_model"):
        from mattergen_kit import mattergen_models

        return getattr(mattergen_models, name)
    if name == "evaluate":
        from mattergen_kit.evaluation import evaluate

        return evaluate
    if name == "finetune":
        from mattergen_kit.training.finetune import finetune

        return finetune
    raise AttributeError(f"module 'mattergen_kit' has no attribute {name!r}")
