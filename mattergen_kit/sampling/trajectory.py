"""The denoising trajectory: snapshots of the sampler's state every k-th step (a picture of how diffusion works).

A snapshot ("frame") holds the state the sampler carries from one step to the next, for every crystal of the
run, as a CPU :class:`~mattergen_kit.data.CrystalBatch`:

    atom_types    x_t: atomic numbers, with ``MASK_Z`` (101) for atoms whose type is not revealed yet
    frac_coords   f_t: the noisy fractional coordinates (wrapped to [0, 1))
    lattice       L_t: the noisy lattice (rows are lattice vectors, Å)

Frame 0 is the prior (step 0, t = 1: every type masked, uniform coordinates, the N-dependent cubic lattice);
then the state after predictor steps k, 2k, ...; the last frame is always the returned crystals (the
noise-free means of the last step, ``step == num_steps``, t = 0).

>>> import mattergen_kit as mk
>>> model = mk.load_model()
>>> crystals, traj = model.generate(2, seed=0, steps=20, return_trajectory=True, trajectory_every=5, progress=False)
>>> len(traj), traj.steps, traj.num_crystals
(5, [0, 5, 10, 15, 20], 2)
>>> bool((traj.frame(0, crystal=1).atom_types == MASK_Z).all())   # every type masked at the start
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mattergen_kit.data import MASK_Z, CrystalBatch


@dataclass
class DenoisingTrajectory:
    """Frames of a sampling run (see the module docstring).

    steps: the sampler step after which each frame was taken (0 = the prior, ``num_steps`` = the result).
    times: the diffusion time t of each frame's state (1 at the prior, 0 for the result).
    frames: one CPU ``CrystalBatch`` of all crystals per frame.
    """

    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    frames: list[CrystalBatch] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (f"DenoisingTrajectory({len(self)} frames, steps {self.steps[:1]}..{self.steps[-1:]}, "
                f"{self.num_crystals} crystals)")

    @property
    def num_crystals(self) -> int:
        return self.frames[0].num_crystals if self.frames else 0

    def record(self, step: int, t: float, types: torch.Tensor, coords: torch.Tensor, lattice: torch.Tensor,
               num_atoms: torch.Tensor) -> None:
        """Append a CPU copy of one state (never touches the sampler's random generator)."""
        self.steps.append(int(step))
        self.times.append(float(t))
        self.frames.append(CrystalBatch(types.detach().to("cpu", copy=True), coords.detach().to("cpu", copy=True),
                                        lattice.detach().to("cpu", copy=True), num_atoms.detach().to("cpu", copy=True)))

    def frame(self, j: int, crystal: int | None = None) -> CrystalBatch:
        """Frame ``j`` of all crystals, or of one ``crystal`` (a batch of one)."""
        batch = self.frames[j]
        return batch if crystal is None else batch[crystal]

    def crystal(self, i: int) -> list[CrystalBatch]:
        """Every frame of crystal ``i`` (a list of one-crystal batches)."""
        if not 0 <= i < self.num_crystals:
            raise IndexError(f"crystal {i} is out of range: the trajectory holds {self.num_crystals} crystals")
        return [b[i] for b in self.frames]

    def revealed_fraction(self, i: int) -> list[float]:
        """Fraction of crystal ``i``'s atoms whose type is revealed (not ``MASK_Z``), per frame."""
        return [float((b.atom_types != MASK_Z).float().mean()) for b in self.crystal(i)]

    @staticmethod
    def concatenate(parts: list["DenoisingTrajectory"]) -> "DenoisingTrajectory":
        """Join the trajectories of consecutive batches of one run (same steps) into one of all crystals."""
        parts = [p for p in parts if p is not None]
        if not parts:
            raise ValueError("no trajectories to join")
        if len(parts) == 1:
            return parts[0]
        if any(p.steps != parts[0].steps for p in parts):
            raise ValueError("trajectories of different step grids cannot be joined")
        frames = [CrystalBatch.collate([p.frames[j] for p in parts]) for j in range(len(parts[0]))]
        return DenoisingTrajectory(list(parts[0].steps), list(parts[0].times), frames)
