"""Cell-choice augmentation: show the network the same crystal in another, equivalent unit cell (pure torch).

Every bundled crystal is stored in one canonical cell (primitive → Niggli → symmetric polar factor). The network
sees the lattice through its Gram matrix and the atoms through fractional coordinates, so a different but
equivalent basis of the same lattice is a different input for the same crystal — an augmentation that changes
the lattice the network sees without changing the crystal (issue 22: a regulariser against overfitting).

For a crystal (L, f) with lattice vectors as the rows of L and Cartesian positions x = f L:

    M      = a random unimodular integer matrix (det M = +1): a product of ``shears`` elementary shears
             I ± E_ab (a ≠ b), i.e. one lattice vector plus or minus another
    L'     = M L                       the same lattice, another basis
    f'     = (f M⁻¹) mod 1             the same positions:  f' L' = f M⁻¹ M L = f L  (up to a lattice vector)
    L''    = (L' L'ᵀ)^½                the symmetric polar factor, as every canonical cell: L' = L'' Q, Q a rotation
                                       (Q rotates the crystal, which changes nothing the network sees)

The number of atoms stays N.

Primitive vs conventional cell (this changes N): :func:`conventional_alternatives` finds, at packing time (spglib
through pymatgen), each crystal's conventional standard cell where it holds more atoms than the stored primitive
cell and at most ``max_atoms``, canonicalised without the primitive step (Niggli → symmetric polar factor). A
training pack stores them beside the primitive cells (``training/fast.py pack --conventional``) and the training
loop shows a crystal in its conventional cell with a chosen probability (``--conventional P``).
"""

from __future__ import annotations

import torch

from mattergen_kit.data.crystal_batch import CrystalBatch

__all__ = ["random_unimodular", "symmetric_polar", "random_equivalent_cells", "conventional_alternatives"]


def random_unimodular(n: int, shears: int = 2, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 3, 3) integer-valued float matrices with determinant +1: products of ``shears`` random I ± E_ab."""
    m = torch.eye(3, device=device).repeat(n, 1, 1)
    pairs = torch.tensor([(a, b) for a in range(3) for b in range(3) if a != b], device=device)
    rows = torch.arange(n, device=device)
    for _ in range(shears):
        pick = pairs[torch.randint(0, len(pairs), (n,), generator=generator, device=device)]
        sign = torch.randint(0, 2, (n,), generator=generator, device=device).float() * 2 - 1
        shear = torch.eye(3, device=device).repeat(n, 1, 1)
        shear[rows, pick[:, 0], pick[:, 1]] = sign
        m = shear @ m
    return m


def symmetric_polar(lattice: torch.Tensor) -> torch.Tensor:
    """(L Lᵀ)^½ of each (3, 3) lattice: the symmetric lattice with the same Gram matrix (eigh, float64)."""
    gram = (lattice.double() @ lattice.double().transpose(1, 2))
    values, vectors = torch.linalg.eigh(gram)
    root = vectors @ torch.diag_embed(values.clamp(min=0).sqrt()) @ vectors.transpose(1, 2)
    return root.to(lattice.dtype)


def random_equivalent_cells(batch: CrystalBatch, probability: float = 0.5, shears: int = 2,
                            generator: torch.Generator | None = None) -> CrystalBatch:
    """The batch with each crystal, with probability ``probability``, moved to a random equivalent cell (module
    doc); the others are returned unchanged. Atom types, N and the atoms' order are kept."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1] (got {probability})")
    device, B = batch.lattice.device, batch.num_crystals
    if probability == 0.0 or B == 0:
        return batch
    m = random_unimodular(B, shears, generator, device)
    keep = torch.rand(B, generator=generator, device=device) >= probability
    m[keep] = torch.eye(3, device=device)
    inverse = torch.linalg.inv(m).round()  # integer-valued: det M = 1
    batch_idx = torch.repeat_interleave(torch.arange(B, device=device), batch.num_atoms)
    frac = torch.einsum("ni,nij->nj", batch.frac_coords.double(), inverse.double().index_select(0, batch_idx))
    frac = torch.remainder(frac, 1.0).to(batch.frac_coords.dtype)
    frac = torch.where(frac >= 1.0, torch.zeros_like(frac), frac)
    lattice = symmetric_polar(m.to(batch.lattice.dtype) @ batch.lattice)
    lattice = torch.where(keep[:, None, None], batch.lattice, lattice)
    frac = torch.where(keep.index_select(0, batch_idx)[:, None], batch.frac_coords, frac)
    return CrystalBatch(batch.atom_types, frac, lattice, batch.num_atoms, batch.properties)


def conventional_alternatives(structures, max_atoms: int = 52, symprec: float = 0.1) -> tuple[list[int], CrystalBatch]:
    """``(index, cells)``: for each structure whose conventional standard cell (spglib, ``symprec`` Å) holds more
    atoms than the structure and at most ``max_atoms``, its index and that cell (canonical without the primitive
    step: Niggli → (L Lᵀ)^½), as one CrystalBatch in index order. Structures spglib cannot read are left out."""
    import warnings

    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from mattergen_kit.data.crystal_batch import canonicalize_structure

    index, cells = [], []
    for i, s in enumerate(structures):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conventional = SpacegroupAnalyzer(s, symprec=symprec).get_conventional_standard_structure()
        except Exception:  # noqa: BLE001 - spglib fails on a few cells: they keep their primitive cell only
            continue
        if len(s) < len(conventional) <= max_atoms:
            index.append(i)
            cells.append(canonicalize_structure(conventional, primitive=False))
    return index, CrystalBatch.from_structures(cells) if cells else None
