"""One denoiser call on this CPU (issue 21): calls per second at batch 32 and 64 under each setting, and where a
call's time goes.

    python benchmarks/bench_denoiser_call.py                 # the table (ratios against float32 + no_grad, 1 thread)
    python benchmarks/bench_denoiser_call.py --profile 64    # plus torch.profiler's top operators at batch 64

The shipped base model, a batch of crystals drawn from its prior (numbers of atoms from the model's prior, fractional
coordinates uniform, lattice from the lattice prior, every atom masked) at t = 0.5, the same batch for every setting
in one process. Settings: float32 under ``torch.no_grad()`` (MatterGen's reference sampler; the baseline),
``torch.inference_mode()``, bfloat16 autocast (the few-step sampler where the CPU has bf16 instructions:
``sampling/few_step.fast_bfloat16``), and each with 2 torch threads. Each figure is the median of ``--repeats`` timed
calls after 3 warm-up calls. Results: ``benchmarks/results/denoiser_call.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def noisy_batch(model, batch: int, seed: int = 0):
    import torch

    from mattergen_kit.data import CrystalBatch
    from mattergen_kit.data import MASK_Z

    g = torch.Generator().manual_seed(seed)
    num_atoms = model.num_atoms_prior.sample(batch, generator=g)
    coords = model.diffusion.coords.sample_prior(num_atoms, g)
    lattice = model.diffusion.lattice.sample_prior(num_atoms, g)
    types = torch.full((int(num_atoms.sum()),), MASK_Z, dtype=torch.long)
    return CrystalBatch(types, coords, lattice, num_atoms), torch.full((batch,), 0.5)


def time_calls(model, batch, t, repeats: int, grad_mode: str, bf16: bool, threads: int) -> float:
    """Median seconds per call."""
    import torch

    torch.set_num_threads(threads)
    ctx = torch.inference_mode if grad_mode == "inference_mode" else torch.no_grad
    use = torch.zeros(batch.num_crystals, dtype=torch.bool)
    seconds = []
    for k in range(3 + repeats):
        t0 = time.perf_counter()
        with ctx(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch, t, use_condition=use)
        float(out.coord_score.float().sum())                            # the call is done
        if k >= 3:
            seconds.append(time.perf_counter() - t0)
    torch.set_num_threads(1)
    return statistics.median(seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", nargs="+", type=int, default=[32, 64])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--profile", type=int, default=None, metavar="BATCH", help="torch.profiler's top operators")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    import mattergen_kit as mk
    from mattergen_kit.sampling.few_step import fast_bfloat16

    model = mk.load_model()
    net = model.denoiser.eval()
    settings = [("float32, no_grad (baseline)", "no_grad", False, 1),
                ("float32, inference_mode", "inference_mode", False, 1),
                ("bf16 autocast, no_grad (few-step sampler)", "no_grad", True, 1),
                ("bf16 autocast, inference_mode", "inference_mode", True, 1),
                ("float32, no_grad, 2 threads", "no_grad", False, 2),
                ("bf16 autocast, no_grad, 2 threads", "no_grad", True, 2)]
    rows = []
    print(f"CPU bf16 instructions: {fast_bfloat16('cpu')}; torch {torch.__version__}")
    print(f"{'setting':>44} {'batch':>6} {'ms/call':>9} {'calls/s':>8} {'× baseline':>11}")
    for b in args.batches:
        batch, t = noisy_batch(model, b)
        base = None
        for name, grad_mode, bf16, threads in settings:
            s = time_calls(net, batch, t, args.repeats, grad_mode, bf16, threads)
            base = base or s
            rows.append({"setting": name, "batch": b, "atoms": int(batch.num_atoms.sum()), "ms_per_call": 1e3 * s,
                         "calls_per_s": 1 / s, "crystals_per_s": b / s, "speedup": base / s})
            print(f"{name:>44} {b:>6} {1e3 * s:>9.1f} {1 / s:>8.2f} {base / s:>11.2f}", flush=True)
    out = {"cpu_bf16": fast_bfloat16("cpu"), "torch": torch.__version__, "repeats": args.repeats, "rows": rows}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        batch, t = noisy_batch(model, args.profile)
        use = torch.zeros(batch.num_crystals, dtype=torch.bool)
        for bf16 in (False, True):
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                net(batch, t, use_condition=use)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        net(batch, t, use_condition=use)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
            print(f"\nbatch {args.profile}, {'bf16 autocast' if bf16 else 'float32'} (3 calls):\n{table}")
            out[f"profile_{'bf16' if bf16 else 'float32'}"] = [
                {"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3 / 3, "calls": e.count // 3}
                for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]]
    (HERE / "results" / "denoiser_call.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
