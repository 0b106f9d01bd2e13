"""`CrystalBatch`: the one object every part of mattergen_kit speaks.

A batch of B crystals with N_i atoms each (ΣN atoms in total) is stored flat, PyG style:

================  ===========  =========  ==============================================================
field             shape        dtype      meaning
================  ===========  =========  ==============================================================
``atom_types``    (ΣN,)        int64      atomic number Z (1..100); ``MASK_Z`` = 101 is the D3PM mask
``frac_coords``   (ΣN, 3)      float32    fractional coordinates, wrapped into [0, 1)
``lattice``       (B, 3, 3)    float32    row convention: row k is lattice vector a_k in Å;
                                          Cartesian r = f · L (f a row vector)
``num_atoms``     (B,)         int64      N_i
``properties``    dict         --         per-crystal labels: name -> (B,) float tensor or list (str)
================  ===========  =========  ==============================================================

``batch_idx`` (ΣN,) maps each atom to its crystal.  Conversions to and from pymatgen ``Structure``
and ASE ``Atoms`` are exact up to float32 rounding (we never re-orient the cell unless asked to:
see :func:`canonicalize_structure` for the Niggli + symmetric-polar-factor form the model uses).

Example
-------
>>> from pymatgen.core import Lattice, Structure
>>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
>>> batch = CrystalBatch.from_structures([nacl])
>>> batch.num_crystals, int(batch.num_atoms[0])
(1, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from mattergen_kit.constants import MASK_Z, MAX_ATOMIC_NUM  # noqa: F401  (re-exported)


@dataclass
class CrystalBatch:
    atom_types: torch.Tensor
    frac_coords: torch.Tensor
    lattice: torch.Tensor
    num_atoms: torch.Tensor
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atom_types = torch.as_tensor(self.atom_types, dtype=torch.long)
        self.frac_coords = torch.as_tensor(self.frac_coords, dtype=torch.float32)
        self.lattice = torch.as_tensor(self.lattice, dtype=torch.float32)
        self.num_atoms = torch.as_tensor(self.num_atoms, dtype=torch.long)
        if self.lattice.ndim != 3 or self.lattice.shape[1:] != (3, 3):
            raise ValueError(f"lattice must have shape (B, 3, 3), got {tuple(self.lattice.shape)}")
        if self.num_atoms.shape != (self.lattice.shape[0],):
            raise ValueError(
                f"num_atoms has shape {tuple(self.num_atoms.shape)} but there are {self.lattice.shape[0]} lattices"
            )
        total = int(self.num_atoms.sum())
        if self.atom_types.shape != (total,) or self.frac_coords.shape != (total, 3):
            raise ValueError(
                f"atom_types {tuple(self.atom_types.shape)} and frac_coords {tuple(self.frac_coords.shape)} "
                f"must hold sum(num_atoms) = {total} atoms"
            )

    # ------------------------------------------------------------------ basic views
    @property
    def num_crystals(self) -> int:
        return int(self.num_atoms.shape[0])

    def __len__(self) -> int:
        return self.num_crystals

    @property
    def device(self) -> torch.device:
        return self.frac_coords.device

    @property
    def batch_idx(self) -> torch.Tensor:
        """(ΣN,) index of the crystal each atom belongs to."""
        return torch.repeat_interleave(torch.arange(self.num_crystals, device=self.device), self.num_atoms)

    @property
    def cart_coords(self) -> torch.Tensor:
        """(ΣN, 3) Cartesian positions r = f · L."""
        return torch.einsum("ni,nij->nj", self.frac_coords, self.lattice[self.batch_idx])

    @property
    def volume(self) -> torch.Tensor:
        return torch.linalg.det(self.lattice).abs()

    def replace(self, **changes: Any) -> "CrystalBatch":
        """A copy with some fields replaced (like ``dataclasses.replace``)."""
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> "CrystalBatch":
        props = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.properties.items()}
        return CrystalBatch(
            self.atom_types.to(device), self.frac_coords.to(device), self.lattice.to(device),
            self.num_atoms.to(device), props,
        )

    def __getitem__(self, index: int) -> "CrystalBatch":
        """The single crystal ``index`` as a batch of one."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"a CrystalBatch is indexed by a whole number, got {index!r}")
        if not -self.num_crystals <= index < self.num_crystals:
            raise IndexError(f"crystal {index} of a batch of {self.num_crystals}")
        if index < 0:
            index += self.num_crystals
        start = int(self.num_atoms[:index].sum())
        stop = start + int(self.num_atoms[index])
        props = {k: (v[index : index + 1] if torch.is_tensor(v) else [v[index]]) for k, v in self.properties.items()}
        return CrystalBatch(
            self.atom_types[start:stop], self.frac_coords[start:stop], self.lattice[index : index + 1],
            self.num_atoms[index : index + 1], props,
        )

    def split(self) -> list["CrystalBatch"]:
        return [self[i] for i in range(self.num_crystals)]

    # ------------------------------------------------------------------ pymatgen
    @classmethod
    def from_structures(cls, structures: Sequence, properties: dict[str, Any] | None = None) -> "CrystalBatch":
        """Build a batch from pymatgen ``Structure`` objects (ordered sites only)."""
        types, coords, lattices, counts = [], [], [], []
        for i, s in enumerate(structures):
            if not (hasattr(s, "lattice") and hasattr(s, "is_ordered")):
                raise TypeError(f"structure {i} is a {type(s).__name__}, not a pymatgen Structure")
            if len(s) == 0:
                raise ValueError(f"structure {i} has no atoms")
            if not s.is_ordered:
                raise ValueError(f"structure {i} ({s.composition.reduced_formula}) has partial occupancies; "
                                 "order it first (e.g. pymatgen OrderDisorderedStructureTransformation)")
            types.append(np.array([site.specie.Z for site in s], dtype=np.int64))
            coords.append(np.mod(np.asarray(s.frac_coords, dtype=np.float64), 1.0))
            lattices.append(np.asarray(s.lattice.matrix, dtype=np.float64))
            counts.append(len(s))
        return cls._from_arrays(types, coords, lattices, counts, properties)

    def to_structures(self) -> list:
        """One pymatgen ``Structure`` per crystal. Mask tokens (Z = 101) raise: sample to the end first."""
        from pymatgen.core import Lattice, Structure

        if bool((self.atom_types == MASK_Z).any()) or bool((self.atom_types < 1).any()):
            raise ValueError("batch still holds masked/invalid atom types; finish sampling before converting")
        out = []
        types = self.atom_types.cpu().numpy()
        coords = self.frac_coords.detach().cpu().double().numpy()
        lattices = self.lattice.detach().cpu().double().numpy()
        offsets = np.concatenate([[0], np.cumsum(self.num_atoms.cpu().numpy())])
        for i in range(self.num_crystals):
            a, b = offsets[i], offsets[i + 1]
            out.append(Structure(Lattice(lattices[i]), types[a:b].tolist(), coords[a:b]))
        return out

    # ------------------------------------------------------------------ ASE
    @classmethod
    def from_atoms(cls, atoms_list: Sequence, properties: dict[str, Any] | None = None) -> "CrystalBatch":
        """Build a batch from periodic ASE ``Atoms`` objects."""
        types, coords, lattices, counts = [], [], [], []
        for i, atoms in enumerate(atoms_list):
            if not all(atoms.pbc):
                raise ValueError(f"Atoms {i} is not periodic in all three directions (pbc={list(atoms.pbc)})")
            types.append(np.asarray(atoms.numbers, dtype=np.int64))
            coords.append(np.mod(atoms.get_scaled_positions(wrap=False), 1.0))
            lattices.append(np.asarray(atoms.cell[:], dtype=np.float64))
            counts.append(len(atoms))
        return cls._from_arrays(types, coords, lattices, counts, properties)

    def to_atoms(self) -> list:
        """One periodic ASE ``Atoms`` per crystal."""
        from ase import Atoms

        out = []
        for one in self.split():
            out.append(Atoms(numbers=one.atom_types.cpu().numpy(),
                             scaled_positions=one.frac_coords.detach().cpu().double().numpy(),
                             cell=one.lattice[0].detach().cpu().double().numpy(), pbc=True))
        return out

    # ------------------------------------------------------------------ batching
    @classmethod
    def collate(cls, items: Iterable["CrystalBatch | dict"]) -> "CrystalBatch":
        """Concatenate crystals (``CrystalBatch`` objects or dicts with the same keys) into one batch.

        Use as ``DataLoader(dataset, collate_fn=CrystalBatch.collate)``.
        """
        items = [it if isinstance(it, CrystalBatch) else CrystalBatch(**it) for it in items]
        if not items:
            raise ValueError("cannot collate an empty list of crystals")
        props: dict[str, Any] = {}
        for key in items[0].properties:
            values = [it.properties[key] for it in items]
            if torch.is_tensor(values[0]):
                props[key] = torch.cat([torch.as_tensor(v).reshape(-1) for v in values])
            else:
                props[key] = [x for v in values for x in v]
        return cls(
            torch.cat([it.atom_types for it in items]),
            torch.cat([it.frac_coords for it in items]),
            torch.cat([it.lattice for it in items]),
            torch.cat([it.num_atoms for it in items]),
            props,
        )

    @classmethod
    def _from_arrays(cls, types, coords, lattices, counts, properties) -> "CrystalBatch":
        if not counts:
            raise ValueError("no crystals given")
        props = {}
        for key, values in (properties or {}).items():
            if len(values) != len(counts):
                raise ValueError(f"property {key!r} has {len(values)} values for {len(counts)} crystals")
            if all(isinstance(v, (int, float, np.integer, np.floating)) or v is None for v in values):
                props[key] = torch.tensor([np.nan if v is None else float(v) for v in values], dtype=torch.float32)
            else:
                props[key] = list(values)
        return cls(
            torch.from_numpy(np.concatenate(types)),
            torch.from_numpy(np.concatenate(coords)).float() % 1.0,
            torch.from_numpy(np.stack(lattices)).float(),
            torch.tensor(counts, dtype=torch.long),
            props,
        )


# ---------------------------------------------------------------------- canonical form (ref §1.3)
def symmetric_polar_factor(lattice: torch.Tensor) -> torch.Tensor:
    """Symmetric factor of the polar decomposition, L_sym = (L Lᵀ)^{1/2} = W S Wᵀ for L = W S Vᵀ.

    L = L_sym · (W Vᵀ): the crystal is only rigidly rotated/reflected, fractional coordinates are kept.
    Works on (3, 3) or (B, 3, 3) tensors (or numpy arrays, returned as numpy).
    """
    as_numpy = isinstance(lattice, np.ndarray)
    L = torch.as_tensor(lattice)
    if L.ndim < 2 or tuple(L.shape[-2:]) != (3, 3):
        raise ValueError(f"a lattice is a (3, 3) matrix (or a batch of them), got shape {tuple(L.shape)}")
    if not bool(torch.isfinite(L).all()):
        raise ValueError("the lattice holds NaN or infinite entries")
    W, S, _ = torch.linalg.svd(L)
    L_sym = W @ torch.diag_embed(S) @ W.transpose(-1, -2)
    L_sym = 0.5 * (L_sym + L_sym.transpose(-1, -2))  # exact symmetry despite rounding
    return L_sym.numpy() if as_numpy else L_sym


def canonicalize_structure(structure, primitive: bool = True):
    """MatterGen's canonical cell (ref §1.3): primitive cell → Niggli reduction → symmetric polar factor.

    Returns a new pymatgen ``Structure`` with fractional coordinates wrapped into [0, 1). The lattice
    is the symmetric matrix (L Lᵀ)^{1/2} of the Niggli cell, so any rotated copy of the input gives
    the same lattice matrix.
    """
    from pymatgen.core import Lattice, Structure

    if not hasattr(structure, "get_primitive_structure"):
        raise TypeError(f"canonicalize_structure takes a pymatgen Structure, got {type(structure).__name__}")
    s = structure.get_primitive_structure() if primitive else structure.copy()
    s = s.get_reduced_structure(reduction_algo="niggli")
    L_sym = symmetric_polar_factor(np.asarray(s.lattice.matrix, dtype=np.float64))
    return Structure(Lattice(L_sym), s.species, np.mod(s.frac_coords, 1.0),
                     site_properties=s.site_properties or None)
