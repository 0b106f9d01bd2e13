r"""Do conditioned samples have the property they were asked for? (issue 10's proof, one row per target and γ)

    python -m mattergen_kit.studies.adherence --model mattergen_kit/checkpoints/mp_bundled_20_conditioned.npz \
        --property space_group --targets 225,194,62,14,2 --gammas 0,1,2,4 --num 64 --steps 200 --out runs/adherence

Per (property, target, γ) it generates ``num`` crystals (γ = 0 is the unconditional model: sampled once and
shared by all targets of a property) and measures on the samples:

    space_group        hit_rate = share whose spglib number (symprec 0.1) equals the target
    chemical_system    in_system = share whose elements ⊆ target system (must be 1: the sampler masks the
                       others), exact_system = share with exactly the target's elements
    scalar properties  median / mean of the samples' values, and
                       shift = (median_γ − median_unconditional) / (target − median_unconditional)
                       (1 = the median reached the target, ≥ 0.5 = the issue's "at least halfway")
        band_gap          the project's composition → band-gap predictor (evaluation/properties.py)
        hhi_production    exact (pymatgen HHI, weight-fraction weighted)
        magnetic_density  CHGNet Σ|m_i| / V on the sample as generated (ML)
        bulk_modulus      CHGNet relaxation + EOS (label_job.py; ML, ~3 s per crystal)
        formation_energy_per_atom, e_above_hull: not measured here (use mattergen_kit.evaluate with relax=True)

plus structural / compositional (SMACT) validity and uniqueness with the evaluator's definitions, no relaxation —
the price of steering — and, with ``stability=True``, the evaluator's CHGNet stability and S.U.N. (relaxed, bundled
hull; an ML screening estimate). Rows are appended to ``OUT/adherence.jsonl`` (one JSON object per line, with the
per-sample ``values``; a rerun skips rows present) and the samples to ``OUT/samples/<property>_<target>_g<γ>.extxyz``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MEASURED = ("space_group", "chemical_system", "band_gap", "hhi_production", "magnetic_density", "bulk_modulus")


def measure(structures: Sequence, name: str, labeller=None) -> list:
    """The property ``name`` of each structure (None where it cannot be computed)."""
    if name == "space_group":
        from mattergen_kit.data.parsing import spacegroup_number

        return [spacegroup_number(s, symprec=0.1) or None for s in structures]
    if name == "chemical_system":
        return ["-".join(sorted(el.symbol for el in s.composition.elements)) for s in structures]
    if name == "hhi_production":
        from mattergen_kit.data.parsing import hhi

        return [hhi(s.composition)[0] for s in structures]
    if name == "band_gap":
        from mattergen_kit.evaluation.properties import band_gap_predictor

        return [float(v) for v in band_gap_predictor().predict([s.composition for s in structures])]
    if name in ("magnetic_density", "bulk_modulus"):
        from mattergen_kit.studies.label_job import Labeller

        labeller = labeller or Labeller()
        out = []
        for s in structures:
            if not 2.0 <= s.volume / len(s) <= 1000.0:  # collapsed or exploded cells: no value (and no huge graphs)
                out.append(None)
                continue
            try:
                out.append(getattr(labeller, name)(s))
            except Exception:  # noqa: BLE001 - a sample the potential cannot handle has no value
                out.append(None)
        return out
    raise ValueError(f"adherence of {name!r} is not measured here; measurable: {', '.join(MEASURED)}")


def score(values: Sequence, name: str, target: Any, unconditional_median: float | None = None) -> dict:
    """Adherence of measured ``values`` to ``target`` (formulas in the module docstring)."""
    n = len(values)
    if name == "space_group":
        return {"hit_rate": sum(v == int(target) for v in values) / max(n, 1)}
    if name == "chemical_system":
        want = set(target.split("-"))
        have = [set(v.split("-")) for v in values]
        return {"in_system": sum(h <= want for h in have) / max(n, 1),
                "exact_system": sum(h == want for h in have) / max(n, 1)}
    x = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    row = {"n_measured": int(len(x)), "median": float(np.median(x)) if len(x) else None,
           "mean": float(x.mean()) if len(x) else None}
    if unconditional_median is not None and row["median"] is not None and float(target) != unconditional_median:
        row["shift"] = (row["median"] - unconditional_median) / (float(target) - unconditional_median)
    return row


def quality(structures: Sequence) -> dict:
    """Structural validity (no atoms closer than 0.5 Å, volume), SMACT validity and uniqueness (StructureMatcher)
    of the samples, with the evaluator's definitions (evaluation/validity.py, matching.py), no relaxation."""
    from mattergen_kit.evaluation.matching import unique_mask
    from mattergen_kit.evaluation.validity import smact_validity, structural_validity

    def valid(s) -> bool:  # a cell of > 1000 Å³ per atom is no crystal, and its neighbour search can exhaust memory
        return s.volume / len(s) <= 1000.0 and max(s.lattice.abc) <= 200.0 and structural_validity(s)[0]

    n = max(len(structures), 1)
    ok, unique = [valid(s) for s in structures], list(unique_mask(list(structures)))
    return {"structural_validity": sum(ok) / n,
            "compositional_validity": sum(bool(smact_validity(s.composition)) for s in structures) / n,
            "uniqueness": sum(unique) / n, "valid_and_unique": sum(a and b for a, b in zip(ok, unique)) / n}


def novelty_rate(structures: Sequence) -> float:
    """Share of ``structures`` that match no crystal of the bundled train split (the evaluator's matcher, reference
    and index, all memoised in the process, so repeated calls do not reload or re-index the train split)."""
    from mattergen_kit.evaluation.evaluate import _reference_index
    from mattergen_kit.evaluation.matching import novel_mask
    from mattergen_kit.evaluation.reference import resolve_reference

    index = _reference_index(*resolve_reference("bundled-train"))
    return float(sum(novel_mask(list(structures), index)[0]) / max(len(structures), 1))


def stability(structures: Sequence, out: str | Path | None = None, cluster=None) -> dict:
    """The evaluator's stability (E_hull ≤ 0.1 eV/atom after CHGNet relaxation, bundled hull) and S.U.N. rates of
    ``structures`` (ML estimates; ``out`` keeps the resumable relaxation log; batched CHGNet relaxations, whose
    results are those of the one-at-a-time path; ``cluster``: spread them over a Dask cluster, as ``evaluate``)."""
    from mattergen_kit.evaluation import evaluate

    summary = evaluate(list(structures), reference="bundled-train", relax=True, out=out, distribution=False,
                       properties=False, band_gap=False, progress=False, batch_size=32, cluster=cluster).summary
    return {"stability": summary.get("stability"), "sun": summary.get("sun"), "rmsd": summary.get("rmsd")}


def _compact(values: Sequence) -> list:
    return [round(v, 6) if isinstance(v, float) else v for v in values]


def run(model, name: str, targets: Sequence, gammas: Sequence[float] = (0.0, 1.0, 2.0, 4.0), num: int = 64,
        steps: int = 200, seed: int = 0, batch_size: int = 64, out: str | Path | None = None,
        progress: bool = True, with_stability: bool | int = False, enforce_symmetry: bool = False,
        novelty: bool = False, sampler: str = "reference") -> list[dict]:
    """Rows of adherence for ``name`` at each target and γ (appended to ``out/adherence.jsonl`` when given).

    ``with_stability``: True relaxes every sample for stability / S.U.N.; an int k relaxes the first k only
    (the row's ``stability_n``). ``enforce_symmetry`` (space_group only): sample with Wyckoff templates of the
    target (generate(enforce_symmetry=True)); then γ = 0 is the template-constrained sampler without guidance.
    ``novelty``: also the share of samples matching no bundled train crystal (StructureMatcher). ``sampler``:
    "reference" (MatterGen's predictor-corrector sampler at ``steps``; rows without a ``sampler`` field are its) or
    "fast" (the few-step sampler of sampling/few_step.py at ``steps``)."""
    from mattergen_kit.generation import GenerativeModel, load_model

    if model is None or isinstance(model, (str, Path)):
        model = load_model(model)      # else a GenerativeModel, or a PresampledModel (samples drawn on a GPU)
    drawn_on = None
    if not isinstance(model, GenerativeModel):
        drawn_on = {"store": str(getattr(model, "source", "")), "model": getattr(model, "model_name", "")}
    path = Path(out) / "adherence.jsonl" if out is not None else None
    done = read_jsonl(path) if path is not None else []
    key = lambda r: (r["property"], str(r["target"]), float(r["gamma"]), r["num"], r["steps"], r["seed"],  # noqa: E731
                     bool(r.get("enforce_symmetry", False)), r.get("sampler", "reference"))
    if enforce_symmetry and name != "space_group":
        raise ValueError("enforce_symmetry applies to the space_group property only")
    have = {key(r): r for r in done}
    rows, labeller = [], None
    if name in ("magnetic_density", "bulk_modulus"):
        from mattergen_kit.studies.label_job import Labeller

        labeller = Labeller()
    uncond, u_median = None, None      # γ = 0 samples (shared by all targets) and their median
    scalar = name not in ("space_group", "chemical_system")
    for target in targets:
        for gamma in sorted(gammas):     # γ = 0 first: the shifts are measured from it
            base = {"property": name, "target": target, "gamma": float(gamma), "num": num, "steps": steps, "seed": seed}
            if enforce_symmetry:
                base["enforce_symmetry"] = True
            if sampler != "reference":
                base["sampler"] = sampler
            if key(base) in have:
                rows.append(have[key(base)])
                if gamma == 0 and scalar:
                    u_median = have[key(base)]["median"]
                continue
            if gamma == 0 and uncond is not None:
                structures, values = uncond
            else:
                conditions = {name: target} if gamma != 0 or enforce_symmetry else None
                structures = model.generate(num, seed=seed, steps=steps, batch_size=batch_size, progress=progress,
                                            conditions=conditions, guidance_scale=float(gamma),
                                            **({"enforce_symmetry": True} if enforce_symmetry else {}),
                                            **({"sampler": sampler} if sampler != "reference" else {}))
                values = measure(structures, name, labeller)
                if gamma == 0 and not enforce_symmetry:   # the templates differ per target
                    uncond = (structures, values)
                    u_median = score(values, name, target)["median"] if scalar else None
            row = {**base, **score(values, name, target, u_median if gamma != 0 else None), **quality(structures)}
            if drawn_on is not None:
                row["drawn_on"] = drawn_on
            if novelty:
                row["novelty"] = novelty_rate(structures)
            tag = (f"{name}_{str(target).replace('/', '_')}_g{gamma:g}" + ("_sym" if enforce_symmetry else "")
                   + ("" if sampler == "reference" else f"_{sampler}{steps}"))
            if with_stability:
                k = len(structures) if with_stability is True else int(with_stability)
                row.update(stability(structures[:k], Path(out) / "relax" / tag if out is not None else None),
                           stability_n=min(k, len(structures)))
            row["values"] = _compact(values)
            if out is not None:
                from mattergen_kit.outputs import atomic_write_text, extxyz_text

                (Path(out) / "samples").mkdir(parents=True, exist_ok=True)
                atomic_write_text(Path(out) / "samples" / f"{tag}.extxyz",
                                  extxyz_text(list(structures), [f"{tag}_{i}" for i in range(len(structures))]))
            rows.append(row)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if progress:
                print(json.dumps({k: v for k, v in row.items() if k != "values"}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mattergen_kit.studies.adherence", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="conditioned checkpoint (default: the conditioned bundled model)")
    p.add_argument("--property", required=True, choices=MEASURED)
    p.add_argument("--targets", required=True, help="comma-separated targets, e.g. 225,194 or Li-O,Fe-S")
    p.add_argument("--gammas", default="0,1,2,4")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/adherence")
    p.add_argument("--stability", action="store_true",
                   help="also relax the samples (CHGNet) for stability and S.U.N. (~2-3 s per crystal on 1 core)")
    p.add_argument("--enforce-symmetry", action="store_true",
                   help="space_group only: sample with Wyckoff templates of the target (generate(enforce_symmetry=True))")
    p.add_argument("--novelty", action="store_true", help="also measure novelty against the bundled train split")
    p.add_argument("--sampler", choices=("reference", "fast"), default="reference",
                   help="reference: MatterGen's predictor-corrector sampler at --steps; fast: the few-step sampler")
    p.add_argument("--presampled", default=None, metavar="STORE",
                   help="judge samples drawn elsewhere (tools/sample_on_device.py) for --model instead of sampling")
    args = p.parse_args(argv)
    import torch

    from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

    torch.set_num_threads(1)
    cast = str if args.property == "chemical_system" else (int if args.property == "space_group" else float)
    targets = [cast(t.strip()) for t in args.targets.split(",") if t.strip()]
    gammas = [float(g) for g in args.gammas.split(",")]
    try:
        model = args.model or BUNDLED_CONDITIONED_CHECKPOINT
        if args.presampled:
            from mattergen_kit.presampled import PresampledModel

            model = PresampledModel(args.presampled, model)
        run(model, args.property, targets, gammas, args.num, args.steps,
            args.seed, out=args.out, with_stability=args.stability, enforce_symmetry=args.enforce_symmetry,
            novelty=args.novelty, sampler=args.sampler)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0



# ----------------------------------------------------------------------------------------------- reading and plots
def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-empty line ([] when the file does not exist yet)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_rows(out: str | Path) -> list[dict]:
    """The rows of ``out/adherence.jsonl`` (or of that file given directly)."""
    path = Path(out)
    path = path / "adherence.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no adherence rows at {path}: run `python -m mattergen_kit.studies.adherence` "
                                "or benchmarks/bench_conditioning.py first")
    return read_jsonl(path)


def current_rows(rows: list[dict]) -> list[dict]:
    """One row per (property, target, γ, steps, templates, sampler): the one with the most samples (the last written if
    equal). A point re-measured with more samples (e.g. 64 → 256 on a lent GPU) supersedes the smaller run, whose
    row stays in adherence.jsonl as history."""
    key = lambda r: (r["property"], str(r["target"]), r["gamma"], r["steps"], bool(r.get("enforce_symmetry")),  # noqa: E731
                     r.get("sampler", "reference"))
    best = {}
    for r in rows:
        if key(r) not in best or r["num"] >= best[key(r)]["num"]:
            best[key(r)] = r
    keep = {id(r) for r in best.values()}
    # a property's rows at its largest n (its γ = 0 row shared by every target, measured at the same n)
    n_of = {}
    for r in best.values():
        n_of[r["property"]] = max(n_of.get(r["property"], 0), r["num"])
    return [r for r in rows if id(r) in keep and r["num"] == n_of[r["property"]]]


def _caption(rows: list[dict]) -> str:
    nums = sorted({r["num"] for r in rows})
    steps = sorted({r["steps"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    return f"{'/'.join(map(str, nums))} samples per point, {'/'.join(map(str, steps))} steps, seed {seeds}"


def plot_hit_rates(rows: list[dict], name: str = "space_group", metric: str | None = None, ax=None):
    """Target hit rate vs guidance scale γ, one line per target (γ = 0: the unconditional model)."""
    import matplotlib.pyplot as plt

    metric = metric or ("hit_rate" if name == "space_group" else "exact_system")
    rows = [r for r in rows if r["property"] == name]
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for target in dict.fromkeys(r["target"] for r in rows):
        pts = sorted((r["gamma"], r[metric]) for r in rows if r["target"] == target)
        ax.plot(*zip(*pts), marker="o", label=str(target))
    ax.set_xlabel("guidance scale γ")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.set_title(f"{name.replace('_', ' ')}: {metric.replace('_', ' ')} vs γ\n{_caption(rows)}", fontsize=9)
    ax.legend(fontsize=8, title="target")
    return ax


def plot_property_shifts(rows: list[dict], name: str, axes=None):
    """Distribution of a scalar property at each γ, per target (dashed: the target; γ = 0: unconditional)."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["property"] == name]
    targets = list(dict.fromkeys(r["target"] for r in rows))
    if axes is None:
        _, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.2), squeeze=False)
        axes = axes[0]
    for ax, target in zip(axes, targets):
        sel = sorted((r for r in rows if r["target"] == target), key=lambda r: r["gamma"])
        data = [[v for v in r["values"] if v is not None] for r in sel]
        log = name in ("magnetic_density", "bulk_modulus", "hhi_production") and all(
            v > 0 for d in data for v in d)
        ax.boxplot([np.log10(d) if log else d for d in data], showfliers=False)
        ax.set_xticks(range(1, len(sel) + 1), [f"γ={r['gamma']:g}" for r in sel])
        ax.axhline(np.log10(float(target)) if log else float(target), ls="--", color="C3", label="target")
        from mattergen_kit.conditioning import get_spec

        unit = get_spec(name).unit
        ax.set_ylabel(("log10 " if log else "") + name.replace("_", " ") + (f" ({unit})" if unit else ""))
        ax.set_title(f"target {target}\n{_caption(sel)}", fontsize=8)
        ax.legend(fontsize=8)
    return axes


def plot_price(rows: list[dict], ax=None):
    """The price of steering vs γ: structural / SMACT validity and uniqueness averaged over all targets (solid), and
    the CHGNet stability of each target that was relaxed (dashed; its own line, since the targets differ)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for metric, style in (("structural_validity", "-o"), ("compositional_validity", "-s"), ("uniqueness", "-^")):
        gammas = sorted({r["gamma"] for r in rows if r.get(metric) is not None})
        if gammas:
            means = [np.mean([r[metric] for r in rows if r["gamma"] == g and r.get(metric) is not None])
                     for g in gammas]
            ax.plot(gammas, means, style, label=metric.replace("_", " ") + " (mean)")
    relaxed = sorted({(r["property"], str(r["target"])) for r in rows if r.get("stability") is not None})
    for prop, target in relaxed:
        own = sorted((r for r in rows if r["property"] == prop and str(r["target"]) == target
                      and r.get("stability") is not None), key=lambda r: r["gamma"])
        n = "/".join(map(str, sorted({r.get("stability_n", r["num"]) for r in own})))
        hull = own[0].get("hull", "old mp20")   # rows re-judged on mp20+mpfe carry hull= (bench_conditioning.read_all)
        line, = ax.plot([r["gamma"] for r in own], [r["stability"] for r in own], "--d",
                        label=f"stable (CHGNet, {hull} hull, E_hull ≤ 0.1): {prop.replace('_', ' ')} {target}, n={n}")
        if all(r.get("stability_mp20") is not None for r in own):   # the first-published figure, faint
            ax.plot([r["gamma"] for r in own], [r["stability_mp20"] for r in own], ":", color=line.get_color(),
                    alpha=0.5, label=f"same, old mp20 hull: {prop.replace('_', ' ')} {target}")
    ax.set_xlabel("guidance scale γ")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"price of steering\n{_caption(rows)}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return ax


# what compares a per-property model with the shared one (plot_shared_vs_per_property): property → (row key, label)
PER_PROPERTY_METRICS = {"space_group": ("hit_rate", "hit rate"), "chemical_system": ("exact_system", "exactly the system"),
                        "band_gap": ("shift", "shift of the median")}


def plot_shared_vs_per_property(rows: list[dict], own: list[dict], name: str, metric: str, label: str,
                                gamma: float = 2.0, ax=None):
    """Bars per target at guidance ``gamma``: the shared conditioned model (``rows``) against a model fine-tuned on
    ``name`` alone (``own``: its adherence rows, same requests); dashed: the issue's bar where it has one (space
    group: 25 % hit rate; scalars: half way)."""
    import matplotlib.pyplot as plt

    own = [r for r in own if r["gamma"] == gamma and r["property"] == name]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    if not own:
        return ax
    shared = {str(r["target"]): r[metric] for r in rows if r["property"] == name and r["gamma"] == gamma
              and not r.get("enforce_symmetry") and r["num"] == own[0]["num"] and r["steps"] == own[0]["steps"]}
    targets = [str(r["target"]) for r in own if str(r["target"]) in shared]
    x = np.arange(len(targets))
    ax.bar(x - 0.2, [shared[t] for t in targets], 0.4, label="one shared model", color="#6baed6")
    ax.bar(x + 0.2, [next(r[metric] for r in own if str(r["target"]) == t) for t in targets], 0.4,
           label="per-property model", color="#fd8d3c")
    ax.set_xticks(x, targets, fontsize=8)
    ax.set_title(f"{name.replace('_', ' ')}: {label}, γ = {gamma:g}\n{own[0]['num']} samples per bar, seed "
                 f"{own[0]['seed']}", fontsize=9)
    if metric == "shift" or name == "space_group":
        ax.axhline(0.5 if metric == "shift" else 0.25, color="k", lw=0.8, ls="--")
    return ax


if __name__ == "__main__":
    sys.exit(main())
