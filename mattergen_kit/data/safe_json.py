"""Structures from untrusted JSON without letting the file choose a module to import.

pymatgen's ``Structure.from_dict`` hands every site property to monty's ``MontyDecoder``, and monty imports the
module named by any ``"@module"`` entry (``__import__(d["@module"])``, then calls ``from_dict`` or the class on the
rest of the dict; ``"@callable"`` even returns any function). A structure JSON from a shared folder, an MP cache,
an Alexandria dump or a ``relaxed.jsonl`` could therefore run the top-level code of any importable module.

Rule (one reader for every structure the kit decodes from a file): before ``Structure.from_dict`` the whole dict
is walked; a dict carrying ``@module``/``@class`` must name one of :data:`ALLOWED_CLASSES` (pymatgen's own
structure classes, and monty's plain numpy array); ``@callable``/``@bound`` entries are refused. Nothing is
imported for a refused file. Use :func:`structure_from_dict` and :func:`check_no_class_dispatch`; never
``MontyDecoder``/``loadfn`` on a file (tests/test_planted_files.py checks the package for them).
"""

from __future__ import annotations

ALLOWED_CLASSES = frozenset({
    ("pymatgen.core.structure", "Structure"), ("pymatgen.core.structure", "IStructure"),
    ("pymatgen.core.sites", "PeriodicSite"), ("pymatgen.core.sites", "Site"),
    ("pymatgen.core.lattice", "Lattice"), ("pymatgen.core.composition", "Composition"),
    ("pymatgen.core.periodic_table", "Element"), ("pymatgen.core.periodic_table", "Species"),
    ("pymatgen.core.periodic_table", "DummySpecies"), ("pymatgen.core.periodic_table", "Specie"),
    ("pymatgen.core.periodic_table", "DummySpecie"),
    ("numpy", "array"),  # monty writes numpy site properties so; decoded by np.array(data, dtype) only
})
DISPATCH_KEYS = ("@module", "@class", "@callable", "@bound")


class UntrustedJSONError(ValueError):
    """A JSON structure names code to import (a monty ``@module``/``@class`` outside the allow-list)."""


def check_no_class_dispatch(obj, source: str = "the JSON") -> None:
    """UntrustedJSONError if any dict inside ``obj`` asks monty to import something outside ALLOWED_CLASSES."""
    stack = [(obj, "")]
    while stack:  # iterative: a deeply nested file cannot exhaust the recursion limit here
        item, where = stack.pop()
        if isinstance(item, dict):
            if any(k in item for k in DISPATCH_KEYS):
                module, cls = item.get("@module"), item.get("@class")
                if "@callable" in item or "@bound" in item or (module, cls) not in ALLOWED_CLASSES:
                    shown = {k: str(item[k])[:80] for k in DISPATCH_KEYS if k in item}
                    raise UntrustedJSONError(
                        f"{source}: the entry at {where or '/'} names {shown}; a data file may not choose a module "
                        "to import (only pymatgen's own structure classes are read): refused, nothing imported")
            stack.extend((v, f"{where}/{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}/{i}") for i, v in enumerate(item))


def structure_from_dict(d, source: str = "the JSON"):
    """``Structure.from_dict(d)`` after :func:`check_no_class_dispatch` (ValueError for a non-dict)."""
    from pymatgen.core import Structure  # pymatgen is heavy: imported on first use, like the data layer's parsers

    if not isinstance(d, dict):
        raise ValueError(f"{source}: a structure must be a JSON object (a pymatgen Structure dict), "
                         f"got {type(d).__name__}")
    check_no_class_dispatch(d, source)
    return Structure.from_dict(d)
