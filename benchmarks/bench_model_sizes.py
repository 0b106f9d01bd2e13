"""Which denoiser size learns most per CPU-minute? Train each size for a fixed wall-clock budget with the real
``train()`` (bundled train split, batch 64, cosine over the budget), then report

    params, train crystals/s, peak RSS, val loss per field (EMA weights, 512 val crystals, fixed noise),
    forward time of one sampler call for 64 crystals.

Each size runs in its own process (so peak RSS is its own). Usage::

    python benchmarks/bench_model_sizes.py --minutes 3 --sizes 128x4 256x4 256x6 [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time


def one(hidden: int, layers: int, minutes: float, threads: int, run_dir: str) -> dict:
    import torch

    from mattergen_kit.data.crystal_batch import CrystalBatch
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.model import DenoiserConfig, count_parameters
    from mattergen_kit.training import TrainConfig, load_model, train

    cfg = TrainConfig(run_dir=run_dir, model=DenoiserConfig(hidden_dim=hidden, num_layers=layers), batch_size=64,
                      max_epochs=1000,
                      max_time_minutes=minutes, warmup_steps=100, limit_val=512, val_every_n_epochs=1000,
                      progress_bar=False, num_threads=threads, ckpt_every_n_steps=10**9)
    path = train(cfg)
    model, diffusion, ckpt = load_model(path)
    steps = ckpt["meta"]["global_step"]

    val = load_bundled("val", progress=False)
    gen = torch.Generator().manual_seed(0)
    sums: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, 512, 64):
            batch = CrystalBatch.collate([val[i] for i in range(start, start + 64)])
            for k, v in diffusion.training_losses(model, batch, generator=gen).items():
                sums[k] = sums.get(k, 0.0) + float(v) / 8

    # one sampler call: 64 crystals at t = 0.5, sizes from the data prior
    batch = CrystalBatch.collate([val[i] for i in range(512, 576)])
    t = torch.full((64,), 0.5)
    noisy, _ = diffusion.corrupt(batch, t, gen)
    with torch.no_grad():
        model(noisy, t)
        t1 = time.time()
        for _ in range(10):
            model(noisy, t)
    fwd_ms = (time.time() - t1) / 10 * 1000
    return {"size": f"{hidden}x{layers}", "params": count_parameters(model), "steps": steps,
            "crystals_per_s": round(steps * 64 / (minutes * 60), 1), "peak_rss_MB": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "fwd64_ms": round(fwd_ms, 1),
            **{f"val_{k}": round(v, 4) for k, v in sums.items()}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", nargs="+", default=["128x4", "256x4", "256x6"])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        h, l = map(int, args.one.split("x"))
        with tempfile.TemporaryDirectory() as d:
            print("RESULT " + json.dumps(one(h, l, args.minutes, args.threads, d)), flush=True)
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", size, "--minutes", str(args.minutes),
                              "--threads", str(args.threads)], capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not line:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            continue
        rows.append(json.loads(line[0][7:]))
        print(rows[-1], flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
