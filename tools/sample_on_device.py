"""Draw the benchmarks' samples on a lent GPU, judge them here.

Sampling the 4.4M-parameter models on the 2 CPU cores takes minutes per hundred crystals (1,000 crystals at 1,000
steps: ~45 min); on one GPU it takes seconds. The judging (spglib, SMACT, relaxations) needs pymatgen and CHGNet,
which the GPU machine does not have. So:

    python tools/sample_on_device.py plan --out runs/device/plan.json            # here: the jobs of the benchmarks
    python tools/sample_on_device.py draw --plan runs/device/plan.json --out $OUT/samples.pt --device cuda   # GPU
    python tools/sample_on_device.py quality --store samples.pt --job base_1000x1000 --tag gpu_1000steps     # here

``draw`` needs torch and this package only (no pymatgen); it writes the store after every job (atomically), so a
run stopped at its time limit keeps what it drew. The store holds each job's crystals as flat tensors
(CrystalBatch fields) under a key that says what was asked: model, number, seed, steps, conditions, γ.
``mattergen_kit.presampled.PresampledModel`` serves a store through ``generate()``, so ``studies.adherence.run`` judges the GPU's
samples exactly as it judges its own (``python -m mattergen_kit.studies.adherence ... --presampled STORE``);
``quality`` writes a job as the batch files of ``benchmarks/bench_base_quality.py``, which then judges and relaxes
them. Samples drawn on a GPU with a large batch are not the crystals a CPU run with the same seed draws (the seeds
are per batch of ``--batch-size``): they are as random, and the results say where they were drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mattergen_kit.presampled import STORE_FORMAT, job_batch, job_by_label, job_key, load_store, save_store  # noqa: E402

BASE = "mattergen_kit/checkpoints/mp_bundled_20.npz"
CONDITIONED = "mattergen_kit/checkpoints/mp_bundled_20_conditioned.npz"


def conditioning_jobs(num: int = 256, nums: dict | None = None, model: str = CONDITIONED,
                      properties: list[str] | None = None) -> list[dict]:
    """Every (property, target, γ) request of benchmarks/bench_conditioning.py's PLAN, as adherence.run makes them
    (γ = 0: one unconditional request per property, shared by its targets). ``num`` samples per point, or
    ``nums[property]``; ``properties``: a subset of PLAN (e.g. the one a per-property model was trained on)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_conditioning import GAMMAS, PLAN

    unknown = sorted(set(properties or []) - set(PLAN))
    if unknown:
        raise SystemExit(f"unknown properties {unknown}; the benchmark plans {list(PLAN)}")
    jobs = []
    for name, plan in PLAN.items():
        if properties and name not in properties:
            continue
        n = (nums or {}).get(name, num)
        jobs.append(dict(model=model, num=n, seed=0, steps=plan["steps"], conditions=None, guidance_scale=0.0,
                         label=f"{name}_g0"))
        for target in plan["targets"]:
            for gamma in GAMMAS:
                if gamma:
                    jobs.append(dict(model=model, num=n, seed=0, steps=plan["steps"], conditions={name: target},
                                     guidance_scale=float(gamma), label=f"{name}_{target}_g{gamma:g}"))
    return jobs


def draw(plan: list[dict], out: Path, device: str, batch_size: int, log=print) -> dict:
    from mattergen_kit.generation import load_model

    store = load_store(out) if out.exists() else {"format": STORE_FORMAT, "jobs": {}}
    models = {}
    for i, job in enumerate(plan):
        key = _key(job)
        if key in store["jobs"]:
            continue
        try:
            if job["model"] not in models:
                models[job["model"]] = load_model(job["model"], device=device)
            start = time.perf_counter()
            batch = models[job["model"]].sample(job["num"], seed=job["seed"], steps=job["steps"],
                                                batch_size=batch_size, conditions=job.get("conditions"),
                                                guidance_scale=job.get("guidance_scale", 0.0), progress=False,
                                                threads=None)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        except Exception:  # noqa: BLE001 - one failing request must not lose the others' samples
            log(f"[{i + 1}/{len(plan)}] {job.get('label', key)}: FAILED\n{traceback.format_exc()}")
            continue
        store["jobs"][key] = {"atom_types": batch.atom_types.cpu(), "frac_coords": batch.frac_coords.cpu(),
                              "lattice": batch.lattice.cpu(), "num_atoms": batch.num_atoms.cpu(),
                              "seconds": seconds, "batch_size": batch_size, "device": _device_name(device),
                              "label": job.get("label", "")}
        save_store(store, out)
        log(f"[{i + 1}/{len(plan)}] {job.get('label', key)}: {job['num']} crystals x {job['steps']} steps "
            f"in {seconds:.1f} s")
    return store


def _key(job: dict) -> str:
    return job_key(job["model"], job["num"], job["seed"], job["steps"], job.get("conditions"),
                   job.get("guidance_scale", 0.0))


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"


def write_quality_batches(store: Path, key_label: str, folder: Path, batch: int = 64) -> int:
    """Write one job of the store as bench_base_quality's batch_<start>.json files (structure dicts)."""
    try:
        key, job = job_by_label(store, key_label)
    except KeyError as err:
        raise SystemExit(f"{store}: {err.args[0]}") from None
    structures = job_batch(job).to_structures()
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(structures), batch):
        (folder / f"batch_{start:06d}.json").write_text(json.dumps([s.as_dict() for s in structures[start:start + batch]]))
    (folder / "DRAWN_ON.json").write_text(json.dumps({"key": key, "device": job["device"], "seconds": job["seconds"],
                                                     "batch_size": job["batch_size"]}))
    return len(structures)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan", help="write the jobs: the base quality sets, then the conditioning PLAN")
    pl.add_argument("--out", required=True)
    pl.add_argument("--base-num", type=int, default=1000)
    pl.add_argument("--base-steps", default="1000,100,200,50")
    pl.add_argument("--num", type=int, default=256, help="conditioning: samples per (property, target, γ)")
    pl.add_argument("--bulk-num", type=int, default=32,
                    help="bulk modulus: samples per point (each is measured by a CHGNet relaxation + EOS here: ~30 s)")
    pl.add_argument("--model", default=CONDITIONED, help="the conditioned model (e.g. a per-property fine-tune)")
    pl.add_argument("--properties", default=None, help="comma-separated subset of the benchmark's properties")
    pl.add_argument("--no-base", action="store_true", help="leave out the base model's quality sets")
    pl.add_argument("--skip-store", default=None, metavar="STORE", help="leave out the jobs this store already holds")
    dr = sub.add_parser("draw", help="sample every job of a plan (resumable; torch only)")
    dr.add_argument("--plan", required=True)
    dr.add_argument("--out", required=True)
    dr.add_argument("--device", default="cuda")
    dr.add_argument("--batch-size", type=int, default=512)
    qu = sub.add_parser("quality", help="write one job as bench_base_quality batch files")
    qu.add_argument("--store", required=True)
    qu.add_argument("--job", required=True, help="the job's label")
    qu.add_argument("--tag", required=True, help="bench_base_quality --tag (folder benchmarks/results/quality_TAG)")
    args = p.parse_args(argv)
    if args.command == "plan":
        jobs = [] if args.no_base else [
            dict(model=BASE, num=args.base_num, seed=0, steps=int(s), conditions=None, guidance_scale=0.0,
                 label=f"base_{args.base_num}x{s}") for s in args.base_steps.split(",")]
        cond = conditioning_jobs(args.num, {"bulk_modulus": args.bulk_num}, args.model,
                                 args.properties.split(",") if args.properties else None)
        jobs = jobs[:2] + cond + jobs[2:]   # the default-steps sets first, then the proof, then the other steps
        if args.skip_store:
            held = load_store(args.skip_store)["jobs"]
            jobs = [j for j in jobs if _key(j) not in held]
        keys = [_key(j) for j in jobs]
        jobs = [j for i, j in enumerate(jobs) if _key(j) not in keys[:i]]   # γ = 0 requests shared by properties
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(jobs, indent=1))
        print(f"{len(jobs)} jobs, {sum(j['num'] for j in jobs)} crystals → {args.out}")
    elif args.command == "draw":
        store = draw(json.loads(Path(args.plan).read_text()), Path(args.out), args.device, args.batch_size,
                     log=lambda m: print(m, flush=True))
        print(f"{len(store['jobs'])} jobs in {args.out}")
    else:
        folder = ROOT / "benchmarks" / "results" / f"quality_{args.tag}"
        n = write_quality_batches(Path(args.store), args.job, folder)
        print(f"{n} crystals → {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
