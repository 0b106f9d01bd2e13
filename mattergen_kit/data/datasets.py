"""Crystal datasets: one container (:class:`CrystalDataset`) and the loaders that fill it.

The code lives in one module per concern; this module gathers them (``mattergen_kit.datasets`` is the
public face):

* :mod:`.report` — :class:`Skip`, :class:`LoadReport` (what was kept and skipped, with file, row, reason);
* :mod:`.dataset` — :class:`CrystalDataset` and its tensor cache;
* :mod:`.csv_table` — :func:`load_csv` (CDVAE-format CSV);
* :mod:`.files` — :func:`load_cif_folder` and the folder/zip reader shared with ICSD and evaluation;
* :mod:`.bundled` — the bundled "mp-bundled-20" set and its split, AFLOW bulk moduli, MP-20 phases.
"""

from mattergen_kit.data.bundled import (BUNDLED_FILES, BUNDLED_NAME, E_ABOVE_HULL_MAX, FORMATION_ENERGY_MAX,
                                        SPLIT_FRACTIONS, SPLIT_SEED, load_aflow_bulk_modulus, load_bundled,
                                        load_mp20_phases, num_atoms_histogram, split_of, splits_file)
from mattergen_kit.data.csv_table import load_csv
from mattergen_kit.data.dataset import (CACHE_VERSION, COLUMN_ALIASES, DERIVED_COLUMNS, MAX_ATOMS, NUMERIC_COLUMNS,
                                        CrystalDataset)
from mattergen_kit.data.files import STRUCTURE_FILE_SUFFIXES, iter_structure_files, load_cif_folder
from mattergen_kit.data.parsing import EXCLUDED_ELEMENTS, EXCLUDED_MIN_Z
from mattergen_kit.data.report import LoadReport, Skip

__all__ = ["CrystalDataset", "LoadReport", "Skip", "load_bundled", "load_csv", "load_cif_folder",
           "num_atoms_histogram", "load_aflow_bulk_modulus", "load_mp20_phases", "split_of", "splits_file",
           "iter_structure_files", "BUNDLED_NAME", "BUNDLED_FILES", "MAX_ATOMS", "E_ABOVE_HULL_MAX",
           "FORMATION_ENERGY_MAX", "SPLIT_SEED", "SPLIT_FRACTIONS", "CACHE_VERSION", "COLUMN_ALIASES",
           "NUMERIC_COLUMNS", "DERIVED_COLUMNS", "STRUCTURE_FILE_SUFFIXES", "EXCLUDED_ELEMENTS", "EXCLUDED_MIN_Z"]
