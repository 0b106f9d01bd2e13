"""Number-of-atoms prior p(N) for de novo sampling (MatterGen ref §1.4, §6.2).

N is drawn i.i.d. per crystal from a categorical distribution over N = 0..len(probs)−1.
``NumAtomsPrior.alex_mp_20()`` holds MatterGen's ALEX_MP_20 histogram (6 decimals, renormalised);
``NumAtomsPrior.from_dataset(split)`` uses the bundled training set
(``mattergen_kit.datasets.num_atoms_histogram``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# p(N) for N = 1..20 (ref §1.4); N = 0 has probability 0.
ALEX_MP_20 = (0.000230, 0.002804, 0.019342, 0.163634, 0.046681, 0.078080, 0.027248, 0.115040, 0.048984,
              0.126205, 0.035774, 0.145913, 0.006003, 0.028628, 0.020228, 0.044732, 0.001303, 0.038699,
              0.007014, 0.043457)


class NumAtomsPrior:
    """Categorical prior over the number of atoms per cell; ``probs[N]`` is p(N) for N = 0, 1, 2, …"""

    def __init__(self, probs: Sequence[float] | np.ndarray | torch.Tensor):
        p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
        if p.ndim != 1 or p.numel() < 2 or bool((p < 0).any()) or float(p.sum()) <= 0:
            raise ValueError("probs must be a 1-D array of non-negative weights over N = 0, 1, 2, … with a positive sum")
        if float(p[0]) > 0:
            raise ValueError("p(N = 0) must be 0: a crystal needs at least one atom")
        self.probs = p / p.sum()

    @classmethod
    def alex_mp_20(cls) -> "NumAtomsPrior":
        return cls([0.0, *ALEX_MP_20])

    @classmethod
    def from_dataset(cls, split: str = "train") -> "NumAtomsPrior":
        from mattergen_kit.datasets import num_atoms_histogram  # data stage; imported lazily
        return cls(num_atoms_histogram(split=split))

    @property
    def max_atoms(self) -> int:
        return int(self.probs.numel() - 1)

    @property
    def largest_trained(self) -> int:
        """The largest N with p(N) > 0: the biggest cells the training data held (``max_atoms`` may be padding)."""
        nonzero = torch.nonzero(self.probs > 0).flatten()
        return int(nonzero.max()) if len(nonzero) else 0

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) int64 numbers of atoms drawn i.i.d. from p(N)."""
        return torch.multinomial(self.probs, n, replacement=True, generator=generator).long()

    def __repr__(self) -> str:
        mean = float((torch.arange(self.probs.numel()) * self.probs).sum())
        return f"NumAtomsPrior(N ≤ {self.max_atoms}, mean N = {mean:.2f})"
