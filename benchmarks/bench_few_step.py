"""Few-step sampling (issue 21): the base-model quality table per sampler configuration, with NFE and wall time.

    python benchmarks/bench_few_step.py --configs ref1000 ref100 fast100 fast50 --num 1000 --relax-n 256
    python benchmarks/bench_few_step.py --configs ref100 ode100 --num 256 --relax-n 0 --tag screen   # screening
    python benchmarks/bench_few_step.py --configs fast100 fast100_cws --num 1000 --first 512 --relax-n 0 \
        --tag types_screen        # the atom-type screen: first 512 of the 1000-crystal draw, paired with fast100

Each configuration (``CONFIGS``: steps and ``PredictorCorrectorSampler`` options) samples ``--num`` crystals of the
shipped base model, seed 0, in batches of 64 exactly as ``GenerativeModel.iter_batches`` does (the same numbers of
atoms and per-batch seeds; the model's type temperature and coherence bias), one torch thread. ``ref1000`` is not
re-sampled on this CPU (2,000 network calls per crystal): its crystals are the 1000-step samples drawn with the same
model and seed on a lent GPU (``benchmarks/results/device_samples_h200.json.gz``, job ``base_1000x1000``; its wall time is
the GPU's; ``ref100_gpu`` likewise the stored 100-step job ``base_1000x100``). Rows, as ``bench_base_quality.py``: SMACT (compositional validity), structural validity, uniqueness,
novelty (bundled train split), mean number of elements and the share with ≥ 5, W(density), W(#elements) to the
bundled test split; with ``--proxy-n K`` the CHGNet force RMS of the first K generated crystals (one batched
single-point call; a cheap stand-in for the distance to the relaxed cell); with ``--relax-n K`` the first K are relaxed
with batched CHGNet: RMSD generated → relaxed, stability (E_hull ≤ 0.1 eV/atom, bundled hull), S.U.N.

Samples are cached as pymatgen JSON under ``benchmarks/results/samples_few_step/<config>_n<num>[_seed<seed>]/``
(git-ignored); the table is written after every configuration to ``benchmarks/results/few_step_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 64
STORE = HERE / "results" / "device_samples_h200.json.gz"

_FAST = {"continuous_update": "ode2m", "noise_scale": 0.7, "network_bfloat16": True}

#: name -> (steps, PredictorCorrectorSampler options). "ref*" are MatterGen's reference sampler.
CONFIGS: dict[str, tuple[int, dict]] = {
    # the few-step sampler's continuous part at 100 and 50 steps; FAST_SAMPLER (mattergen_kit/sampling/few_step.py)
    # is fast100_cws below since 2026-12-04 (coherent reveals within a step); fast100 / fast50 keep their names
    # (and cached samples) as the earlier default
    "fast100": (100, {"continuous_update": "ode2m", "noise_scale": 0.7, "network_bfloat16": True}),
    "fast50": (50, {"continuous_update": "ode2m", "noise_scale": 0.7, "network_bfloat16": True}),
    "ref1000": (1000, {}),
    "ref100": (100, {}),
    "ref100_gpu": (100, {}),
    "ref50": (50, {}),
    # screening: probability-flow predictor, grids, corrector placement
    "ode100": (100, {"continuous_update": "ode"}),
    "ode2m100": (100, {"continuous_update": "ode2m"}),
    "rho2_100": (100, {"grid_rho": 2.0}),
    "rho3_100": (100, {"grid_rho": 3.0}),
    "ode2m200_nocorr": (200, {"continuous_update": "ode2m", "n_corrector_steps": 0}),
    "anc200_nocorr": (200, {"n_corrector_steps": 0}),
    "ode2m_rho2_100": (100, {"continuous_update": "ode2m", "grid_rho": 2.0}),
    "ode2m100_nocorr": (100, {"continuous_update": "ode2m", "n_corrector_steps": 0}),
    "ode2m_rho2_100_nocorr": (100, {"continuous_update": "ode2m", "grid_rho": 2.0, "n_corrector_steps": 0}),
    "conf100": (100, {"type_unmasking": "confidence"}),
    "corr3_50": (50, {"n_corrector_steps": 3}),
    "snr_up_100": (100, {"snr_coords": 0.6, "snr_lattice": 0.4}),
    "corr3_rho2_50": (50, {"n_corrector_steps": 3, "grid_rho": 2.0}),
    "snr_lat_100": (100, {"snr_lattice": 0.4}),
    "ref100_bf16": (100, {"network_bfloat16": True}),
    "ode2m_corr3_50": (50, {"continuous_update": "ode2m", "n_corrector_steps": 3}),
    "ode2m100_bf16": (100, {"continuous_update": "ode2m", "network_bfloat16": True}),
    "ode2m_snr_up_100": (100, {"continuous_update": "ode2m", "snr_coords": 0.6, "snr_lattice": 0.4}),
    "eta07_100": (100, {"noise_scale": 0.7}),
    "ode2m_eta07_100": (100, {"continuous_update": "ode2m", "noise_scale": 0.7}),
    "eta05_100": (100, {"noise_scale": 0.5}),
    "ode2m_eta07_100_bf16": (100, {"continuous_update": "ode2m", "noise_scale": 0.7, "network_bfloat16": True}),
    "eta07_100_bf16": (100, {"noise_scale": 0.7, "network_bfloat16": True}),
    "ode2m_eta05_100_bf16": (100, {"continuous_update": "ode2m", "noise_scale": 0.5, "network_bfloat16": True}),
    "corr3_50_bf16": (50, {"n_corrector_steps": 3, "network_bfloat16": True}),
    "ode2m_conf100": (100, {"continuous_update": "ode2m", "type_unmasking": "confidence"}),
    # atom types of the few-step sampler (tag types_screen): temperature, confidence order, the coherence bias
    "fast100_t09": (100, {**_FAST, "type_temperature": 0.9}),
    "fast100_t08": (100, {**_FAST, "type_temperature": 0.8}),
    "fast100_conf": (100, {**_FAST, "type_unmasking": "confidence"}),
    "fast100_cws": (100, {**_FAST, "coherence_within_step": True}),
    "fast100_cws_b15": (100, {**_FAST, "coherence_within_step": True, "coherence_scale": 1.5}),
    "fast100_b15": (100, {**_FAST, "coherence_scale": 1.5}),
    "fast50_cws": (50, {**_FAST, "coherence_within_step": True}),
    "fast100_remask2": (100, {**_FAST, "remask_rate": 2.0}),
    # the geometry of the default (tag rmsd_screen: RMSD generated -> relaxed): lower corrector noise, two correctors
    # per step where t <= 0.5 (none above: still 200 NFE), or 66 steps with two correctors each (198 NFE)
    "fast100_cws_eta06": (100, {**_FAST, "coherence_within_step": True, "noise_scale": 0.6}),
    "fast100_cws_c2half": (100, {**_FAST, "coherence_within_step": True, "n_corrector_steps": 2,
                                 "corrector_t_max": 0.5}),
    "fast66_cws_c2": (66, {**_FAST, "coherence_within_step": True, "n_corrector_steps": 2}),
    # more correctors still nearer t = 0: three per step at t <= 0.33 (199 NFE); 80 steps, two per step at t <= 0.75
    "fast100_cws_c3third": (100, {**_FAST, "coherence_within_step": True, "n_corrector_steps": 3,
                                  "corrector_t_max": 0.33}),
    "fast80_cws_c2": (80, {**_FAST, "coherence_within_step": True, "n_corrector_steps": 2, "corrector_t_max": 0.75}),
    # FAST_SAMPLER since 2026-12-04 (evening) is fast100_cws_c2half; its 50-step form (50 + 2·25 = 100 NFE)
    "fast50_cws_c2half": (50, {**_FAST, "coherence_within_step": True, "n_corrector_steps": 2,
                               "corrector_t_max": 0.5}),
}


def sample_config(name: str, num: int, seed: int, folder: Path, shard: tuple[int, int] = (0, 1),
                  first: int | None = None) -> tuple[list, float, int]:
    """(structures, sampling seconds, NFE per crystal) of one configuration; cached batches are reused. With
    ``first`` only the first ``first`` crystals of the ``num``-crystal draw are sampled (whole batches)."""
    import torch
    from pymatgen.core import Structure

    import mattergen_kit as mk
    from mattergen_kit.sampling import PredictorCorrectorSampler

    steps, options = CONFIGS[name]
    model = mk.load_model()
    folder.mkdir(parents=True, exist_ok=True)
    # as GenerativeModel.iter_batches: one generator for the run's base seed and the numbers of atoms
    generator = torch.Generator().manual_seed(seed)
    base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    num_atoms = model.num_atoms_prior.sample(num, generator=generator)
    defaults = {"type_temperature": float(model.meta.get("type_temperature", 1.0)),
                "coherence_bias": model.meta.get("coherence_bias"),
                "remask_rate": float(model.meta.get("remask_rate", 0.0))}
    sampler = PredictorCorrectorSampler(model.diffusion, num_steps=steps, **{**defaults, **options})
    timing = folder / f"seconds_{shard[0]}.json"
    seconds = json.loads(timing.read_text()) if timing.exists() else {}
    for start in range(0, num, BATCH):
        path = folder / f"batch_{start:06d}.json"
        if path.exists() or (start // BATCH) % shard[1] != shard[0] or (first is not None and start >= first):
            continue
        stop = min(num, start + BATCH)
        t0 = time.perf_counter()
        batch = sampler.sample(model.denoiser, num_atoms[start:stop], seed=base_seed + start, progress=False)
        seconds[str(start)] = time.perf_counter() - t0
        path.write_text(json.dumps([s.as_dict() for s in batch.to_structures()]))
        timing.write_text(json.dumps(seconds))
        print(f"  {name}: batch {start} in {seconds[str(start)]:.1f} s", flush=True)
    keep = num if first is None else min(num, first)
    seconds = {k: v for f in folder.glob("seconds_*.json") for k, v in json.loads(f.read_text()).items()
               if int(k) < keep}
    structures = [Structure.from_dict(d) for f in sorted(folder.glob("batch_*.json")) for d in json.loads(f.read_text())]
    return structures[:keep], float(sum(seconds.values())), sampler.network_calls()


#: configurations served from the GPU store instead of being sampled here: name -> the store's job label
STORED = {"ref1000": "base_1000x1000", "ref100_gpu": "base_1000x100"}


def stored_reference(name: str, num: int, seed: int) -> tuple[list, float, int]:
    """The reference sampler's samples drawn on the GPU (first ``num``), their GPU seconds, NFE 2 × steps."""
    from mattergen_kit.presampled import job_batch, job_by_label

    if seed != 0 or num > 1000:
        raise SystemExit(f"{name} comes from the stored GPU samples: 1,000 crystals of seed 0")
    _, job = job_by_label(STORE, STORED[name])
    return job_batch(job).to_structures()[:num], float(job["seconds"]) * num / 1000, 2 * CONFIGS[name][0]


def force_rms(structures: list) -> tuple[float, float, float]:
    """(median, geometric mean, mean) over crystals of the RMS CHGNet force (eV/Å) on the generated cells (batched
    single point). The per-crystal values spread over 3 decades (0.04-20 eV/Å): the median and the geometric mean
    are the stable summaries; the mean follows the worst cells."""
    from mattergen_kit.evaluation.relax import load_potential
    from mattergen_kit.evaluation.relax_batched import predict_efs

    net = load_potential("chgnet").calculator.model
    values = []
    for i in range(0, len(structures), 32):
        graphs = []
        for s in structures[i:i + 32]:
            try:
                graphs.append(net.graph_converter(s))
            except Exception:  # noqa: BLE001  (isolated atoms etc.: left out)
                continue
        values += [float(np.sqrt((o["f"] ** 2).sum(-1).mean())) for o in predict_efs(net, graphs)]
    values = np.array(values)
    return float(np.median(values)), float(np.exp(np.log(np.maximum(values, 1e-6)).mean())), float(values.mean())


def judge(structures: list, relax_n: int, proxy_n: int, out: Path | None) -> dict:
    import mattergen_kit as mk
    from mattergen_kit.datasets import load_bundled
    from mattergen_kit.evaluation.distribution import _basic_stats, wasserstein_metrics

    s = mk.evaluate(structures, reference="bundled-train", relax=False, distribution=False, properties=False,
                    band_gap=False, progress=False).summary
    n_el = np.array([len(x.composition) for x in structures])
    row = {"smact": s["compositional_validity"], "structural_validity": s["structural_validity"],
           "uniqueness": s["uniqueness"], "novelty": s["novelty"], "mean_n_elements": float(n_el.mean()),
           "share_ge5_elements": float((n_el >= 5).mean())}
    row.update(wasserstein_metrics(structures, _basic_stats(load_bundled("test", progress=False).structures)))
    if proxy_n:
        row["force_rms_first"] = proxy_n
        row["force_rms"], row["force_rms_geomean"], row["force_rms_mean"] = force_rms(structures[:proxy_n])
    if relax_n:
        t0 = time.perf_counter()
        r = mk.evaluate(structures[:relax_n], reference="bundled-train", relax=True, out=out, distribution=False,
                        properties=False, band_gap=False, progress=False).summary
        row.update({"relax_n": relax_n, "rmsd": r["rmsd"], "stability": r["stability"], "sun": r["sun"],
                    "mean_e_above_hull": r.get("mean_e_above_hull"), "relax_seconds": time.perf_counter() - t0})
    return row


COLUMNS = [("nfe", "NFE", "{:.0f}"), ("sample_seconds", "s", "{:.0f}"), ("smact", "SMACT", "{:.3f}"),
           ("structural_validity", "valid", "{:.3f}"), ("rmsd", "RMSD", "{:.3f}"), ("stability", "stable", "{:.3f}"),
           ("sun", "SUN", "{:.3f}"), ("wdist_density", "W(dens)", "{:.3f}"), ("wdist_n_elements", "W(#el)", "{:.3f}"),
           ("mean_n_elements", "mean el", "{:.2f}"), ("share_ge5_elements", ">=5 el", "{:.3f}"),
           ("uniqueness", "uniq", "{:.3f}"), ("novelty", "novel", "{:.3f}"), ("force_rms", "F_rms", "{:.3f}")]


def print_table(rows: dict) -> None:
    print(f"{'config':>16} " + " ".join(f"{h:>8}" for _, h, _ in COLUMNS))
    for name, row in rows.items():
        cells = [(fmt.format(row[k]) if row.get(k) is not None else "-") for k, _, fmt in COLUMNS]
        print(f"{name:>16} " + " ".join(f"{c:>8}" for c in cells))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["ref1000", "ref100", "ref50"], choices=list(CONFIGS))
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relax-n", type=int, default=256)
    p.add_argument("--proxy-n", type=int, default=0)
    p.add_argument("--tag", default="table")
    p.add_argument("--first", type=int, default=None, help="sample and judge only the first FIRST crystals of the "
                   "--num draw (whole batches of 64; the same numbers of atoms and batch seeds as the full draw, so a "
                   "screen at --num 1000 --first 512 is paired with the cached 1000-crystal runs)")
    p.add_argument("--shard", default="0/1", help="k/K: sample only the batches b with b %% K == k, then stop (run "
                   "K processes, then once more with the default 0/1 to judge all cached batches)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    result_path = HERE / "results" / f"few_step_{args.tag}.json"
    table = json.loads(result_path.read_text()) if result_path.exists() else {}     # other keys (notes) are kept
    rows = table.get("rows", {})
    for name in args.configs:
        label = f"{name}_n{args.num}" + (f"_seed{args.seed}" if args.seed else "")
        folder = HERE / "results" / "samples_few_step" / label
        if name in STORED:
            structures, seconds, nfe = stored_reference(name, args.num, args.seed)
            keep = min(args.first or args.num, args.num)
            structures, seconds = structures[:keep], seconds * keep / args.num
        else:
            shard = tuple(int(x) for x in args.shard.split("/"))
            structures, seconds, nfe = sample_config(name, args.num, args.seed, folder, shard, args.first)
            if shard[1] > 1:
                continue                                    # a shard only samples; the 0/1 run judges
        row = {"config": name, "steps": CONFIGS[name][0], "options": CONFIGS[name][1], "num": len(structures),
               "of_draw": args.num,
               "seed": args.seed, "nfe": nfe, "sample_seconds": seconds,
               "sampled_on": "H200 (stored), batches of 1024" if name in STORED else "CPU, 1 thread, batches of 64"}
        row.update(judge(structures, args.relax_n, args.proxy_n, folder / "relaxation" if args.relax_n else None))
        rows[name] = row
        result_path.write_text(json.dumps({**table, "num": args.num, "seed": args.seed, "rows": rows}, indent=1))
        print_table({name: row})
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
