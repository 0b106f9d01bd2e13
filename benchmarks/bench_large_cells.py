"""Memory and speed of one training step (forward + backward) of the denoiser at N = 20, 40, 52 atoms per cell.

    OMP_NUM_THREADS=1 python benchmarks/bench_large_cells.py --real --out benchmarks/results/large_cells_cpu.json

Per N: B cells of N atoms each (random elements and positions in a cell of the data's density: only the size of the
graph matters here), noised by the diffusion at random t, through the shipped GPU architecture (hidden 256, 6
layers, crystal summary, composition logits; 4.4M parameters) with all pairs or the k-nearest-neighbour graph
(``--graphs all,knn:24``). ``--real``: the same on random batches of the mp-bundled-52 train split (its mix of
sizes), which is what a GPU batch of the 52-atom recipe holds.

Memory is the activation memory autograd keeps for the backward pass: the bytes of every tensor saved by the
forward (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once), which is what grows with
the graph and what a GPU batch must hold; it does not depend on the device (bf16 autocast halves most of it).
Time is the median wall time of a forward + backward on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mattergen_kit.data.crystal_batch import CrystalBatch  # noqa: E402
from mattergen_kit.diffusion.joint import CrystalDiffusion  # noqa: E402
from mattergen_kit.model import CrystalDenoiser  # noqa: E402

ARCH = dict(hidden_dim=256, num_layers=6, crystal_summary=True, composition_logits=True)


def batch_of(n_atoms: int, batch_size: int, seed: int = 0) -> CrystalBatch:
    """``batch_size`` cells of ``n_atoms`` atoms: random types, random fractional coordinates, a cubic-ish cell of the
    data's density (what matters here is only the size of the graph)."""
    gen = torch.Generator().manual_seed(seed)
    types = torch.randint(1, 84, (n_atoms * batch_size,), generator=gen)
    frac = torch.rand(n_atoms * batch_size, 3, generator=gen)
    edge = (n_atoms / 0.0565) ** (1 / 3)
    lattice = torch.eye(3).expand(batch_size, 3, 3) * edge + 0.3 * torch.randn(batch_size, 3, 3, generator=gen)
    return CrystalBatch(types, frac, lattice, torch.full((batch_size,), n_atoms, dtype=torch.long))


def saved_bytes(fn) -> tuple[int, object]:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs, and fn's result."""
    seen: dict[int, int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def measure(n_atoms: int, batch_size: int, graph: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = CrystalDenoiser(**ARCH, graph=graph)
    diffusion = CrystalDiffusion()
    batch = batch_of(n_atoms, batch_size)
    gen = torch.Generator().manual_seed(1)
    nbytes, losses = saved_bytes(lambda: diffusion.training_losses(model, batch, generator=gen))
    losses["loss"].backward()
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        diffusion.training_losses(model, batch, generator=gen)["loss"].backward()
        times.append(time.perf_counter() - start)
    edges = model.graph_edges(batch)[0].numel()
    return {"num_atoms": n_atoms, "batch_size": batch_size, "graph": graph, "edges": int(edges),
            "activation_MB": nbytes / 2 ** 20, "step_s": statistics.median(times),
            "crystals_per_s_cpu1": batch_size / statistics.median(times)}


def measure_real(graph: str, batch_size: int, repeats: int) -> dict:
    """The same on real batches of the mp-bundled-52 train split (random crystals, the data's mix of sizes)."""
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("train", max_atoms=52, progress=False)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model, diffusion = CrystalDenoiser(**ARCH, graph=graph), CrystalDiffusion()
    times, nbytes, edges, atoms = [], [], 0, 0
    for r in range(repeats):
        idx = torch.randint(0, len(ds), (batch_size,), generator=gen)
        batch = CrystalBatch.collate([ds[int(i)] for i in idx])
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        saved, losses = saved_bytes(lambda: diffusion.training_losses(model, batch, generator=gen))
        losses["loss"].backward()
        times.append(time.perf_counter() - start)
        nbytes.append(saved)
        edges += model.graph_edges(batch)[0].numel()
        atoms += int(batch.num_atoms.sum())
    n = ds.num_atoms.astype(float)
    return {"data": "mp-bundled-52 train", "batch_size": batch_size, "graph": graph, "batches": repeats,
            "mean_N": float(n.mean()), "mean_N2": float((n ** 2).mean()), "edges_per_crystal": edges / (repeats * batch_size),
            "activation_MB_per_crystal": statistics.mean(nbytes) / batch_size / 2 ** 20,
            "step_s": statistics.median(times), "crystals_per_s_cpu1": batch_size / statistics.median(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20,40,52")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--graphs", default="all,knn:24")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--real", action="store_true", help="also real mp-bundled-52 batches of --real-batch crystals")
    p.add_argument("--real-batch", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/large_cells_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for graph in args.graphs.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            row = measure(n, args.batch_size, graph, args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps({"arch": ARCH, "threads": 1, "rows": rows}, indent=1) + "\n")
    if args.real:
        for graph in args.graphs.split(","):
            row = measure_real(graph, args.real_batch, args.repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).write_text(json.dumps({"arch": ARCH, "threads": 1, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
