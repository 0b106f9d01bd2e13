"""Public data API: ``from mattergen_kit import datasets``; ``datasets.load_bundled("train")``.

Re-exports the loaders of :mod:`mattergen_kit.data` (see ``datasets/README.md`` for the bundled data).
"""

from mattergen_kit.data.datasets import (BUNDLED_NAME, CrystalDataset, LoadReport, Skip, load_aflow_bulk_modulus,
                                         load_bundled, load_cif_folder, load_csv, load_mp20_phases,
                                         num_atoms_histogram, split_of)
from mattergen_kit.data.paths import DataIntegrityError, cache_root, data_root

__all__ = ["BUNDLED_NAME", "CrystalDataset", "LoadReport", "Skip", "DataIntegrityError", "load_bundled", "load_csv",
           "load_cif_folder", "load_materials_project", "MPAccessError", "load_alexandria", "load_icsd", "load_mp20", "fetch_mp20",
           "load_aflow_bulk_modulus", "load_mp20_phases", "num_atoms_histogram", "split_of", "data_root",
           "cache_root"]


def __getattr__(name):  # the remote/external loaders import lazily (mp-api is slow to import)
    if name in ("load_materials_project", "MPAccessError"):
        from mattergen_kit.data import materials_project

        return getattr(materials_project, name)
    if name == "load_alexandria":
        from mattergen_kit.data.alexandria import load_alexandria

        return load_alexandria
    if name == "load_icsd":
        from mattergen_kit.data.icsd import load_icsd

        return load_icsd
    if name in ("load_mp20", "fetch_mp20"):
        from mattergen_kit.data import mp20

        return getattr(mp20, name)
    raise AttributeError(f"module 'mattergen_kit.datasets' has no attribute {name!r}")
