"""Does a refactor change what the kit samples? Draws the same requests with this checkout and with git revision
REV (a temporary worktree) and prints, per request and field, whether the arrays are bit-identical.

    python benchmarks/same_samples.py 28a96ed      # issue 23's refactor: every field identical

Requests: the base model (10 crystals, 3 batches), the conditioned model with a band gap and a chemical system at
γ = 2, Wyckoff templates for space group 225, and a fixed formula; 20 steps, one torch thread.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DRAW = r'''
import sys, torch, numpy as np
torch.set_num_threads(1)
import mattergen_kit as mk
from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT
base, cond = mk.load_model(), mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)
runs = {
    "base": lambda: base.sample(10, seed=0, steps=20, batch_size=4, progress=False),
    "conditioned": lambda: cond.sample(6, seed=1, steps=20, batch_size=4, guidance_scale=2.0, progress=False,
                                       conditions={"band_gap": 3.0, "chemical_system": "Li-Mn-O"}),
    "templates_225": lambda: cond.sample(4, seed=2, steps=20, conditions={"space_group": 225}, guidance_scale=2.0,
                                         enforce_symmetry=True, progress=False),
    "formula": lambda: base.sample(3, seed=3, steps=20, formula="Li2MnO3", progress=False),
}
out = {}
for name, run in runs.items():
    b = run()
    out.update({f"{name}/atom_types": b.atom_types.numpy(), f"{name}/frac_coords": b.frac_coords.numpy(),
                f"{name}/lattice": b.lattice.numpy()})
np.savez(sys.argv[1], **out)
'''


def draw(checkout: Path, out: Path) -> dict:
    subprocess.run([sys.executable, "-c", DRAW, str(out)], cwd=checkout, check=True,
                   env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return dict(np.load(out))


def main(rev: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", str(tree), rev], cwd=REPO, check=True)
        try:
            (tree / "datasets" / "cache").symlink_to(REPO / "datasets" / "cache")  # the same built data caches
            old = draw(tree, Path(tmp) / "old.npz")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=True)
        new = draw(REPO, Path(tmp) / "new.npz")
    same = 0
    for key in sorted(old):
        equal = key in new and old[key].shape == new[key].shape and np.array_equal(old[key], new[key])
        same += equal
        print(f"{key:28s} {'identical' if equal else 'DIFFERENT'}")
    print(f"{same}/{len(old)} arrays bit-identical between {rev} and this checkout")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", nargs="?", default="HEAD", help="git revision to compare with (default HEAD)")
    main(parser.parse_args().rev)
