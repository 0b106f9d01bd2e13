"""Speed of a mattergen_base-sized model (the port, random weights) on this machine: what sampling costs.

A MatterGen sampling step is two network calls (corrector + predictor); with classifier-free guidance
(γ ∉ {0, 1}) each call runs the unconditional and conditional branch on a doubled batch. So

    seconds per batch of B crystals at S steps  ≈  2 S · t_call(B) (+ the sampler's own arithmetic, measured)

t_call is measured on real crystals (the bundled test split, MP structures ≤ 20 atoms, at their true density:
the graph, 50 neighbours within 7 Å, is what a late sampling step sees) with all atom types masked, for B = 16
and 1 or 2 torch threads, in a fresh process each (peak resident memory = ru_maxrss of that process). Then a
few real sampler steps of the kit's sampler (``--sampler-steps``, default 3) check the per-step figure.
Random weights: the lattice may drift in those steps, which changes the graph; the per-call figure is the one
to trust for trained weights.

    .venv/bin/python benchmarks/bench_mattergen_speed.py                       # 1 and 2 threads, CPU
    .venv/bin/python benchmarks/bench_mattergen_speed.py --device cuda          # on a GPU
Results: printed, and appended to benchmarks/results/mattergen_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "data" / "mattergen_reference" / "released_configs" / "mattergen_base.yaml"
RESULTS = REPO / "benchmarks" / "results" / "mattergen_speed.jsonl"


def real_batch(batch_size: int):
    from mattergen_kit.data import MASK_Z, CrystalBatch
    from mattergen_kit.data.bundled import load_bundled

    ds = load_bundled("test", progress=False)
    parts = [ds[i] for i in range(batch_size)]
    batch = CrystalBatch.collate(parts)
    return batch.replace(atom_types=torch.full_like(batch.atom_types, MASK_Z))


def measure(threads: int, batch_size: int, repeats: int, sampler_steps: int, device: str) -> dict:
    from mattergen_kit.mattergen_models.loader import MatterGenKitDenoiser, MatterGenModel, diffusion_from_config
    from mattergen_kit.model.mattergen import build_denoiser
    from mattergen_kit.sampling import NumAtomsPrior
    import yaml

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = yaml.safe_load(CONFIG.read_text())
    net = build_denoiser(config).to(device).eval()
    params = sum(p.numel() for p in net.parameters())
    denoiser = MatterGenKitDenoiser(net)
    batch = real_batch(batch_size).to(device)
    t = torch.full((batch_size,), 0.1, device=device)
    with torch.no_grad():
        cart = torch.einsum("bi,bij->bj", batch.frac_coords, batch.lattice[batch.batch_idx])
        edge_index, _, _, _, id3_ba, _, _ = net.gemnet.interaction_graph(cart, batch.lattice, batch.num_atoms)
        graph = {"edges": int(edge_index.shape[1]), "triplets": int(id3_ba.numel())}
        denoiser(batch, t)                                  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            denoiser(batch, t)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_call = (time.perf_counter() - start) / repeats
    model = MatterGenModel(denoiser, diffusion_from_config(config), NumAtomsPrior.alex_mp_20(),
                           {"recommended_steps": 1000})
    start = time.perf_counter()
    model.sample(batch_size, seed=0, steps=sampler_steps + 1, num_atoms=batch.num_atoms.tolist(), progress=False,
                 threads=threads)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_step = (time.perf_counter() - start) / (sampler_steps + 1)
    out = {"threads": threads, "batch_size": batch_size, "device": device, "parameters": params,
           "atoms": int(batch.num_atoms.sum()), **graph, "seconds_per_call": t_call, "seconds_per_sampler_step": t_step,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    for steps in (100, 1000):
        per_batch = 2 * steps * t_call
        out[f"crystals_per_s_{steps}_steps"] = batch_size / per_batch
        out[f"minutes_per_100_crystals_{steps}_steps"] = 100 / batch_size * per_batch / 60
        out[f"minutes_per_100_crystals_{steps}_steps_guided"] = 2 * out[f"minutes_per_100_crystals_{steps}_steps"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sampler-steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)   # child process: one setting
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.threads[0], args.batch_size, args.repeats, args.sampler_steps, args.device)))
        return
    rows = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--one", "--threads", str(threads), "--batch-size", str(args.batch_size),
               "--repeats", str(args.repeats), "--sampler-steps", str(args.sampler_steps), "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": str(threads)})
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{args.device}, {threads} thread(s), batch {row['batch_size']} ({row['atoms']} atoms, {row['edges']} edges, "
              f"{row['triplets']} triplets), "
              f"{row['parameters'] / 1e6:.1f}M parameters: {row['seconds_per_call']:.3f} s per network call, "
              f"{row['seconds_per_sampler_step']:.3f} s per sampler step (measured), peak RSS "
              f"{row['peak_rss_mb']:.0f} MB" + (f", peak CUDA {row['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in row else ""))
        for steps in (100, 1000):
            print(f"   {steps:>4} steps: {row[f'crystals_per_s_{steps}_steps']:.4f} crystals/s; 100 crystals ≈ "
                  f"{row[f'minutes_per_100_crystals_{steps}_steps']:.1f} min "
                  f"({row[f'minutes_per_100_crystals_{steps}_steps_guided']:.1f} min with guidance)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        for row in rows:
            f.write(json.dumps({**row, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main()
