r"""Symmetry-constrained sampling: a space group kept exactly by projecting the sampler's state (not MatterGen).

MatterGen steers toward a space group only through the adapter and classifier-free guidance; with a small network
whose geometry is imprecise, most samples then come out P1 (issue 10's proof). Here the space group is instead
*imposed*, in the spirit of DiffCSP++ (Jiao et al. 2024) but without changing the network: a **Wyckoff template** —
the symmetry operations of a training crystal of that space group in its primitive cell, and which atom each
operation sends where — fixes the frame, the number of atoms and the orbits. The network still generates the
lattice, the free coordinates and the elements; after every sampler step the state is projected onto the
template's symmetric subspace:

    operations g = (R_g, τ_g) on fractional column vectors, x ↦ R_g x + τ_g, and g(x_i) ≡ x_{π_g(i)}  (mod 1)

    coordinates, per orbit with first atom r (template position x°_r, stabiliser S_r = {g : π_g(r) = r}):
        x̂_r  = x_r + 1/|G| Σ_g wrap( g⁻¹(x_{π_g(r)}) − x_r ),   g⁻¹(y) = R_g⁻¹ (y − τ_g),  wrap(d) = d − round(d)
        x'_r = x°_r + P_r v*,                                  P_r = 1/|S_r| Σ_{g∈S_r} R_g   (onto the Wyckoff set)
        v*   = argmin_{v = wrap(x̂_r − x°_r) + n, n ∈ {−2..2}³} |(I − P_r) v|_{M°}   (|w|²_{M°} = wᵀ M° w)
        x'_j = R_{g_j} x'_r + τ_{g_j}  (mod 1)  for every atom j of the orbit, with some g_j sending r to j
      (the group average of the orbit's atoms pulled back onto r, then the exact projection onto r's Wyckoff
      position: P_r is the average of a finite group of linear maps, a projector, M°-orthogonal since the R_g are
      M°-isometries; x° satisfies g(x°_r) ≡ x°_r on S_r, so every choice of g_j gives the same x'_j. The Wyckoff
      set is x° + range(P_r) + ℤ³: the lattice translate n is the one that brings the offset nearest to the free
      subspace. Plain P_r wrap(x̂_r − x°_r) is wrong when range(P_r) is not along a cell axis, e.g. (x,x,x): a
      point already on the set whose offset has a component past ½ is wrapped by an integer n with P_r n not an
      integer (P n = (⅓,⅓,⅓) for n = (0,0,1)) and jumps to another, inequivalent point; the free parameter
      could then not reach all its values, and jumped during sampling.)

    lattice (rows = lattice vectors, r = xᵀ L, metric M = L Lᵀ; g is an isometry iff R_gᵀ M R_g = M):
        M ← 1/|G| Σ_g R_gᵀ M R_g,     L ← M^{1/2}   (symmetric, as the sampler's polar-decomposed lattices are)
        with the angles the group leaves free taken from the template's metric M°:
        M_ij ← √(M_ii M_jj) · M°_ij / √(M°_ii M°_jj), then the group average again (lengths: the network's)

    atom types: the template's species pattern is kept, not its elements — atoms that share an element in the
        template (whole orbits) share one here, atoms that do not, do not. The type logits of such a group are
        averaged, the group is revealed as one atom (all its atoms carry the element of its first atom), and an
        element already revealed for one group is masked out for the others. (Without this, two orbits that
        draw the same element can add symmetry: rock salt with one element is simple cubic, Pm-3m.)

    frame (issue 24): the template's cell is the **Niggli-reduced** primitive cell, the frame the network was trained
        in (the bundled crystals are reduced cells, angles within 60°–120°), not pymatgen's primitive *standard* cell.
        With the lengths the network's and the angles the template's, the volume is

            V = a b c √(1 − cos²α − cos²β − cos²γ + 2 cosα cosβ cosγ)

        and the standard rhombohedral cell (a = b = c, α = β = γ, from √(3a_h² + c_h²)/3 and the hexagonal c/a)
        has α = 8°–35° for layered R-3m crystals: V/a³ = √(1 − 3cos²α + 2cos³α) = 0.18 at α = 27° and 0.05 at 14°,
        while the network sizes a, b, c for cells near 60°–90° (V/a³ = 0.71–1). The 166 samples were squeezed
        5–25 fold (median 3.2 Å³/atom; 225's face-centred 60° cells were fine). The standard frame's angles of the
        bundled templates: 166 8°–104°, 148 26°–115°, 139 (body-centred) 22°–165°; Niggli: all within 60°–120°. In the reduced cell the operations are other integer matrices
        (spglib gives them for whatever cell it is handed), the group the same.

    separation (issue 24): a free Wyckoff parameter can drift onto a special value where images of the orbit
        coincide (x → 1/2 for (x,x,x), (−x,−x,−x)); there the symmetric drift along the free direction vanishes and
        the small network pulls near-coincident atoms onto one site rather than apart, so 4 of 24 R-3m samples had
        atoms 0.001–0.04 Å apart. After each projection, with the projected lattice L (rows), atoms closer than
        d_min = MIN_SEPARATION are pushed apart and the state projected again (a few rounds):

            Δr_i = Σ_{j, image n: d_ijn < d_min} ½ (d_min − d_ijn) · u_ijn,   d_ijn = |(x_i − x_j + n)ᵀ L|
            x ← project_coords(x + Δr L⁻¹)

        u_ijn the unit vector from j's image to i (the template's own direction x°_i − x°_j when they coincide).
        For an orbit folding onto itself, j = g(i), the push has a positive component along the free direction
        u = x_i − p away from the special point p: uᵀ(u − R_g u) = |u|² − uᵀR_g u > 0 in the metric that makes R_g an
        isometry, and P_r keeps that component.

Both maps are projections (a state that is already symmetric, in the template's frame, is unchanged; so is one
whose atoms are already d_min apart by the separation) and the final
sample has the template's symmetry exactly, whatever state the network hands over; spglib can still find a
supergroup when two orbits end up with the same element at positions of higher symmetry.

Templates come from the bundled train split (``templates_for``): each sample draws one, so the sampled Wyckoff
patterns follow the training data's; the elements are free, so the compositions are new.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

MIN_SEPARATION = 0.8  # Å: no two atoms of a templated crystal closer (validity needs 0.5 Å; an H–H bond is 0.74)
_IMAGE_SHIFTS = torch.tensor([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)],
                             dtype=torch.float64)
_NEAR_SHIFTS = torch.tensor([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)],
                            dtype=torch.float64)    # lattice translates tried by project_coords


@dataclass
class WyckoffTemplate:
    """Operations of a space group in a primitive cell, and the atom permutation each induces on a template crystal.

    rotations (G, 3, 3), translations (G, 3): fractional operations x ↦ R x + τ (float64).
    permutation (G, N): ``permutation[g, i] = j`` with g(x_i) ≡ x_j.  positions (N, 3): the template's fractional
    coordinates. orbit (N,): index of each atom's orbit (0..n_orbits−1, numbered by first appearance);
    representative (N,): the first atom of each atom's orbit; carrier (N,): an operation sending the representative
    to the atom; wyckoff_projector (N, 3, 3): P_r of the atom's representative. species (N,): index of the atom's
    element in the template (0..n_species−1); species_first (N,): the first atom with the same element.
    """

    space_group: int
    rotations: torch.Tensor
    translations: torch.Tensor
    permutation: torch.Tensor
    positions: torch.Tensor
    orbit: torch.Tensor
    representative: torch.Tensor
    carrier: torch.Tensor
    wyckoff_projector: torch.Tensor
    species: torch.Tensor
    species_first: torch.Tensor
    source: str = ""
    metric: torch.Tensor | None = None      # (3, 3) the template's own cell metric L Lᵀ (its cell angles)

    @property
    def num_atoms(self) -> int:
        return int(self.permutation.shape[1])

    @property
    def num_orbits(self) -> int:
        return int(self.orbit.max()) + 1

    @property
    def num_species(self) -> int:
        return int(self.species.max()) + 1

    def __repr__(self) -> str:
        return (f"WyckoffTemplate(space_group={self.space_group}, num_atoms={self.num_atoms}, "
                f"orbits={self.num_orbits}, species={self.num_species}, operations={self.rotations.shape[0]}, source={self.source!r})")

    @classmethod
    def from_structure(cls, structure, symprec: float = 0.1, source: str = "") -> "WyckoffTemplate":
        """The template of a pymatgen ``Structure``: its Niggli-reduced primitive cell (the network's frame; module
        doc, "frame") and that cell's operations.

        Raises ValueError if an operation does not map the crystal onto itself within ``symprec`` (Å).
        """
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        sga = SpacegroupAnalyzer(structure, symprec=symprec)
        prim = sga.get_primitive_standard_structure().get_reduced_structure("niggli")   # not the standard frame
        psga = SpacegroupAnalyzer(prim, symprec=symprec)
        ops = psga.get_symmetry_operations(cartesian=False)
        frac = np.asarray(prim.frac_coords, dtype=np.float64)
        species = [str(site.specie) for site in prim]
        lattice = np.asarray(prim.lattice.matrix)
        n = len(prim)
        rotations, translations, permutation = [], [], []
        same = np.array([[a == b for b in species] for a in species])
        for op in ops:
            rot, tau = op.rotation_matrix, op.translation_vector
            image = frac @ rot.T + tau                                   # image[i] = g(x_i)
            d = image[:, None, :] - frac[None, :, :]                     # (i, j)
            d -= np.round(d)
            dist = np.where(same, np.linalg.norm(d @ lattice, axis=-1), np.inf)
            pi = dist.argmin(axis=1)                                     # π_g(i)
            if not np.all(dist[np.arange(n), pi] <= symprec) or len(set(pi.tolist())) != n:
                raise ValueError(f"{source or prim.composition.reduced_formula}: an operation does not map the "
                                 f"crystal onto itself within {symprec} Å")
            rotations.append(np.round(rot))
            translations.append(tau)
            permutation.append(pi)
        rotations, permutation = np.stack(rotations), np.stack(permutation)
        distinct = list(dict.fromkeys(species))
        species_index = np.array([distinct.index(e) for e in species], dtype=np.int64)
        species_first = np.array([species.index(e) for e in species], dtype=np.int64)
        # symmetrise the template's own positions (x° = its Wyckoff positions exactly, within float error)
        orbit = -np.ones(n, dtype=np.int64)
        representative = np.zeros(n, dtype=np.int64)
        carrier = np.zeros(n, dtype=np.int64)
        projector = np.zeros((n, 3, 3))
        k = 0
        for r in range(n):
            if orbit[r] >= 0:
                continue
            stabiliser = permutation[:, r] == r
            P = rotations[stabiliser].mean(0)
            for g in range(len(ops)):
                j = permutation[g, r]
                if orbit[j] < 0:
                    orbit[j], representative[j], carrier[j] = k, r, g
            projector[orbit == k] = P
            k += 1
        template = cls(space_group=int(psga.get_space_group_number()),
                       rotations=torch.tensor(rotations, dtype=torch.float64),
                       translations=torch.tensor(np.stack(translations), dtype=torch.float64),
                       permutation=torch.tensor(permutation), positions=torch.tensor(frac),
                       orbit=torch.tensor(orbit), representative=torch.tensor(representative),
                       carrier=torch.tensor(carrier), wyckoff_projector=torch.tensor(projector),
                       species=torch.tensor(species_index), species_first=torch.tensor(species_first), source=source,
                       metric=torch.tensor(lattice @ lattice.T, dtype=torch.float64))
        # the template's own positions, exactly symmetric: its Wyckoff positions x°
        template.positions = template.project_coords(template.positions, exact_positions=False)
        return template

    # ------------------------------------------------------------------ projections
    def project_coords(self, frac: torch.Tensor, exact_positions: bool = True) -> torch.Tensor:
        """The symmetric fractional coordinates nearest ``frac`` (N, 3) in the template's frame (module doc), in [0, 1).

        ``exact_positions=False`` skips the Wyckoff projection (used once, to symmetrise the template itself).
        """
        x = frac.double()
        dev = x.device
        R, tau, perm = self.rotations.to(dev), self.translations.to(dev), self.permutation.to(dev)
        reps = torch.unique(self.representative).to(dev)
        # pull every image of each representative back onto it: g⁻¹(x_{π_g(r)}) = R_g⁻¹ (x_{π_g(r)} − τ_g)
        R_inv = torch.linalg.inv(R).round()
        pulled = torch.einsum("gab,gkb->gka", R_inv, x[perm[:, reps]] - tau[:, None, :])
        d = pulled - x[reps][None]
        x_rep = x[reps] + (d - torch.round(d)).mean(0)
        if exact_positions:                                              # onto the representative's Wyckoff set
            anchor = self.positions.to(dev)[reps]
            P = self.wyckoff_projector.to(dev)[reps]
            u = x_rep - anchor
            v = (u - torch.round(u))[:, None, :] + _NEAR_SHIFTS.to(dev)[None]          # (k, 125, 3) candidates
            off = v - torch.einsum("kab,kcb->kca", P, v)                                 # (I − P) v
            metric = self.metric.to(dev) if self.metric is not None else torch.eye(3, dtype=x.dtype, device=dev)
            best = torch.einsum("kca,ab,kcb->kc", off, metric, off).argmin(dim=1)        # nearest to range(P)
            v = v[torch.arange(len(reps), device=dev), best]
            x_rep = anchor + torch.einsum("kab,kb->ka", P, v)
        full = torch.zeros_like(x)
        full[reps] = x_rep
        rep_pos = full[self.representative.to(dev)]                      # each atom's representative
        g = self.carrier.to(dev)
        out = torch.einsum("nab,nb->na", R[g], rep_pos) + tau[g]
        return torch.remainder(out, 1.0).to(frac.dtype)

    def project_lattice(self, lattice: torch.Tensor, template_angles: bool = True) -> torch.Tensor:
        """M = L Lᵀ ← mean_g R_gᵀ M R_g, L ← M^{1/2} (symmetric). Returns ``lattice`` unchanged if M is not
        positive definite (a lattice still far from a cell, early in sampling).

        ``template_angles``: the cell angles the group leaves free (monoclinic β, the three triclinic angles) are
        the template's, the lengths the network's: M_ij ← √(M_ii M_jj) · M°_ij / √(M°_ii M°_jj), then the group
        average again (a no-op for groups that fix the angles). The network's cells come out within ~2° of
        orthogonal, and a monoclinic cell with β ≈ 90° is orthorhombic to spglib (symprec 0.1): 14's samples were
        mostly Pbam, Cmmm or Pnma without it (``benchmarks/results/conditioning/symmetric/``)."""
        L = lattice.double()
        R = self.rotations.to(L.device)
        metric = L @ L.T
        metric = torch.einsum("gba,bc,gcd->ad", R, metric, R) / R.shape[0]
        metric = 0.5 * (metric + metric.T)
        if template_angles and self.metric is not None and bool((torch.diagonal(metric) > 1e-8).all()):
            own = self.metric.to(L.device)
            cosines = own / torch.sqrt(torch.outer(torch.diagonal(own), torch.diagonal(own)))
            lengths = torch.sqrt(torch.diagonal(metric))
            metric = torch.outer(lengths, lengths) * cosines
            metric = torch.einsum("gba,bc,gcd->ad", R, metric, R) / R.shape[0]
            metric = 0.5 * (metric + metric.T)
        evals, evecs = torch.linalg.eigh(metric)
        if not bool((evals > 1e-8).all()):
            return lattice
        return ((evecs * evals.sqrt()) @ evecs.T).to(lattice.dtype)

    def tie_logits(self, logits: torch.Tensor, types: torch.Tensor | None = None, mask_value: float = -1e10,
                   mask_class: int | None = None) -> torch.Tensor:
        """Every atom gets the mean type logits of its species group (N, K); with the current ``types`` (classes,
        ``mask_class`` = still masked), an element revealed for one group gets ``mask_value`` in the others."""
        k, group = self.num_species, self.species.to(logits.device)
        total = torch.zeros(k, logits.shape[-1], dtype=logits.dtype, device=logits.device)
        total.index_add_(0, group, logits)
        count = torch.bincount(group, minlength=k).to(logits.device, logits.dtype)
        tied = total / count[:, None]
        if types is not None:
            first_atom = torch.unique(self.species_first).to(logits.device)  # one atom per group, in group order
            for g, atom in enumerate(first_atom.tolist()):
                c = int(types[atom])
                if c != mask_class:                                      # group g holds element c: not the others
                    others = torch.arange(k, device=logits.device) != g
                    tied[others, c] = mask_value
        return tied[group]

    def tie_types(self, types: torch.Tensor) -> torch.Tensor:
        """Every atom takes the type (or mask) of the first atom of its species group."""
        return types[self.species_first.to(types.device)]

    def separate(self, frac: torch.Tensor, lattice: torch.Tensor, min_distance: float = MIN_SEPARATION,
                 iterations: int = 8) -> torch.Tensor:
        """Symmetric coordinates ``frac`` (N, 3) with no two atoms closer than ``min_distance`` Å in ``lattice``
        (rows = lattice vectors), pushed apart and projected again (module doc, "separation"); ``frac`` as it is
        when no pair is that close or the cell is degenerate. Periodic images of one atom are not pushed (that is
        a lattice vector shorter than ``min_distance``, the lattice's business)."""
        L = lattice.double()
        if not bool(torch.isfinite(L).all()) or abs(float(torch.linalg.det(L))) < 1e-6:
            return frac
        L_inv = torch.linalg.inv(L)
        x = frac.double()
        n = x.shape[0]
        shifts = _IMAGE_SHIFTS.to(x.device)
        self_pair = torch.eye(n, dtype=torch.bool, device=x.device)[:, :, None].expand(n, n, len(shifts))
        moved = False
        for _ in range(iterations):
            d = x[:, None, :] - x[None, :, :]
            d = d - torch.round(d)
            cart = (d[:, :, None, :] + shifts[None, None]) @ L             # (N, N, 27, 3): r_i − r_j − image
            dist = cart.norm(dim=-1)
            close = (dist < min_distance) & ~self_pair
            if not bool(close.any()):
                break
            unit = cart / dist.clamp_min(1e-12)[..., None]
            coincident = close & (dist < 1e-6)
            if bool(coincident.any()):                                    # no direction: the template's own
                own = self.positions.to(x.device)
                own_d = own[:, None, :] - own[None, :, :]
                own_d = (own_d - torch.round(own_d)) @ L
                own_dir = (own_d / own_d.norm(dim=-1, keepdim=True).clamp_min(1e-12))[:, :, None, :]
                unit = torch.where(coincident[..., None], own_dir.expand_as(cart), unit)
            push = (0.5 * (min_distance - dist) * close)[..., None] * unit
            x = self.project_coords(x + push.sum(dim=(1, 2)) @ L_inv)
            moved = True
        return x.to(frac.dtype) if moved else frac


class SymmetryProjector:
    """Applies one :class:`WyckoffTemplate` per crystal of a batch (None = that crystal is left free).

    ``t_start``: project only at sampler times t ≤ t_start (the final sample is always projected).
    """

    def __init__(self, templates, t_start: float = 1.0, template_angles: bool = True,
                 min_separation: float = MIN_SEPARATION):
        self.templates = list(templates)
        self.template_angles = bool(template_angles)   # WyckoffTemplate.project_lattice
        if not 0.0 < t_start <= 1.0:
            raise ValueError(f"t_start must be in (0, 1], got {t_start}")
        self.t_start = float(t_start)
        if not min_separation >= 0.0:
            raise ValueError(f"min_separation must be >= 0 Å (0 = off), got {min_separation}")
        self.min_separation = float(min_separation)   # WyckoffTemplate.separate

    def active(self, t: float) -> bool:
        return t <= self.t_start

    def _slices(self, num_atoms: torch.Tensor):
        offsets = [0] + torch.cumsum(num_atoms.cpu(), 0).tolist()
        for b, template in enumerate(self.templates):
            if template is not None:
                if template.num_atoms != int(num_atoms[b]):
                    raise ValueError(f"crystal {b} has {int(num_atoms[b])} atoms, its template {template.num_atoms}")
                yield b, slice(offsets[b], offsets[b + 1]), template

    def _per_atom(self, x: torch.Tensor, num_atoms: torch.Tensor, project) -> torch.Tensor:
        """A copy of the per-atom tensor ``x`` with each templated crystal's rows replaced by
        ``project(template, rows)``."""
        out = x.clone()
        for _, sl, template in self._slices(num_atoms):
            out[sl] = project(template, sl)
        return out

    def coords(self, frac: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        return self._per_atom(frac, num_atoms, lambda t, sl: t.project_coords(frac[sl]))

    def lattice(self, lattice: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        out = lattice.clone()
        for b, _, template in self._slices(num_atoms):
            out[b] = template.project_lattice(lattice[b], self.template_angles)
        return out

    def state(self, frac: torch.Tensor, lattice: torch.Tensor, num_atoms: torch.Tensor):
        """(coords, lattice) of a batch projected onto each crystal's template: the lattice, the coordinates, then
        atoms closer than ``min_separation`` pushed apart in the projected cell (``WyckoffTemplate.separate``)."""
        lattice = self.lattice(lattice, num_atoms)
        frac = self.coords(frac, num_atoms)
        if self.min_separation > 0.0:
            frac = frac.clone()
            for b, sl, template in self._slices(num_atoms):
                frac[sl] = template.separate(frac[sl], lattice[b], self.min_separation)
        return frac, lattice

    def logits(self, logits: torch.Tensor, types: torch.Tensor, num_atoms: torch.Tensor, mask_class: int) -> torch.Tensor:
        """Tied type logits (``types``: current classes, ``mask_class`` for masked atoms)."""
        return self._per_atom(logits, num_atoms,
                              lambda t, sl: t.tie_logits(logits[sl], types[sl], mask_class=mask_class))

    def types(self, types: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
        return self._per_atom(types, num_atoms, lambda t, sl: t.tie_types(types[sl]))

    def slice(self, start: int, stop: int) -> "SymmetryProjector":
        return SymmetryProjector(self.templates[start:stop], self.t_start, self.template_angles, self.min_separation)


@lru_cache(maxsize=None)
def _train_space_groups() -> dict:
    """material_id → space group (spglib, symprec 0.1) of the bundled train split, from the committed label table."""
    from mattergen_kit.conditioning.labels import read_label_table

    table = read_label_table()
    table = table[table["split"] == "train"]
    return dict(zip(table["material_id"], table["space_group"]))


@lru_cache(maxsize=None)
def templates_for(space_group: int, max_templates: int = 200, max_atoms: int = 20, seed: int = 0) -> tuple:
    """Wyckoff templates of ``space_group`` from the bundled train split (at most ``max_templates``, a seeded
    random choice of the crystals labelled with it, primitive cells of ≤ ``max_atoms`` atoms).

    Raises ValueError if the train split holds no crystal of that space group.
    """
    space_group = int(space_group)
    if not 1 <= space_group <= 230:
        raise ValueError(f"space_group must be an integer in 1..230, got {space_group}")
    from mattergen_kit.datasets import load_bundled

    groups = _train_space_groups()
    ids = sorted(m for m, sg in groups.items() if sg == sg and int(sg) == space_group)
    if not ids:
        raise ValueError(f"the bundled train split has no crystal of space group {space_group}, so there is no "
                         "Wyckoff template for it; use enforce_symmetry=False (guidance only)")
    rng = np.random.default_rng(seed)
    ids = [ids[i] for i in rng.permutation(len(ids))[: 3 * max_templates]]
    # the first request for a group symmetrises up to 3×max_templates train crystals (10–90 s on a busy 2-core CPU):
    # say so, so that it does not look like a hang (cached for the session: lru_cache)
    start = time.perf_counter()
    print(f"building the Wyckoff templates of space group {space_group} from {len(ids)} bundled train crystals "
          "(once per session) ...", file=sys.stderr, flush=True)
    train = load_bundled("train", progress=False)
    row = {m: i for i, m in enumerate(train.properties["material_id"])}
    ids = [m for m in ids if m in row]
    by_id = dict(zip(ids, train.subset([row[m] for m in ids]).structures)) if ids else {}
    out = []
    for mid in ids:
        try:
            template = WyckoffTemplate.from_structure(by_id[mid], source=mid)
        except (ValueError, KeyError):
            continue
        if template.space_group == space_group and template.num_atoms <= max_atoms:
            out.append(template)
        if len(out) >= max_templates:
            break
    print(f"built {len(out)} templates of space group {space_group} in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)
    if not out:
        raise ValueError(f"no train crystal of space group {space_group} gave a template with ≤ {max_atoms} atoms")
    return tuple(out)
