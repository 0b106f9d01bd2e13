"""The numbers several modules share, in one place (import them from here; the modules re-export them).

Atom types (MatterGen's convention, mattergen_reference.md §1.2, §2): an element with atomic number Z is
D3PM class ``Z − 1``; ``MASK_Z = 101`` is the absorbing mask state in a ``CrystalBatch`` and class
``MASK_CLASS = 100`` in the logits, so there are ``NUM_CLASSES = 101`` classes.
"""

#: largest atomic number a crystal may hold (Fm); 1..100 are real elements
MAX_ATOMIC_NUM = 100
#: the absorbing "mask" atom type of the atom-type diffusion, as stored in CrystalBatch.atom_types
MASK_Z = 101
#: D3PM classes: 100 elements (class = Z − 1) + the mask
NUM_CLASSES = 101
#: the mask's class index
MASK_CLASS = 100

#: MatterGen's SELECTED_ATOMIC_NUMBERS leave out He, Ne, Ar, Kr, Tc, Xe, Pm and every Z ≥ 84
EXCLUDED_Z = (2, 10, 18, 36, 43, 54, 61)
#: the 76 elements the model may generate (Z 1..83 without EXCLUDED_Z)
ALLOWED_Z = tuple(z for z in range(1, 84) if z not in EXCLUDED_Z)
#: the training-data filter of MatterGen (noble gases incl. Rn, Tc, Pm; plus Z ≥ EXCLUDED_MIN_Z)
NOBLE_GASES = ("He", "Ne", "Ar", "Kr", "Xe", "Rn")
EXCLUDED_ELEMENTS = frozenset(NOBLE_GASES + ("Tc", "Pm"))
EXCLUDED_MIN_Z = 84

#: atoms per Å³ of MP-20 / Alex-MP-20 (MatterGen's value): the lattice prior's mean volume is N / AVERAGE_DENSITY
AVERAGE_DENSITY = 0.05771451654022283
#: most atoms per cell in the bundled data and the number-of-atoms prior (MP-20's limit)
MAX_ATOMS = 20

#: element symbols by atomic number (``ELEMENT_SYMBOLS[Z - 1]``), Z = 1..118: symbol look-ups need no pymatgen
#: (the GPU recipes run where only torch is installed)
ELEMENT_SYMBOLS = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce",
    "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir",
    "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc",
    "Lv", "Ts", "Og")
_Z_OF_SYMBOL = {s: z for z, s in enumerate(ELEMENT_SYMBOLS, start=1)}


def atomic_number(symbol: str) -> int:
    """Z of an element symbol ("Fe" → 26; case-sensitive, like pymatgen); ``ValueError`` for anything else."""
    try:
        return _Z_OF_SYMBOL[symbol]
    except (KeyError, TypeError):
        raise ValueError(f"{symbol!r} is not an element symbol") from None

#: the package version (pyproject.toml keeps the same string; mattergen_kit.__version__)
VERSION = "0.1.0"
