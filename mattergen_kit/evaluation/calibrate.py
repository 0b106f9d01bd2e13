"""Fit and measure how an ML potential's energies sit on the DFT formation-energy footing of the reference hull.

    python -m mattergen_kit.evaluation.calibrate --fit            # fit μ on bundled train (static CHGNet energies)
    python -m mattergen_kit.evaluation.calibrate --measure --n 60  # calibration on held-out structures
    python -m mattergen_kit.evaluation.calibrate --model sevennet --fit --n-fit 300 --measure --n 20  # SevenNet

``--fit`` writes ``<model>_elemental_references.json`` next to this file (see :mod:`.hull` for the formula), one
per potential (``--model chgnet`` default, or ``sevennet``).
``--measure`` relaxes ``n`` bundled **test** structures (all within 0.08 eV/atom of MP's hull) and ``n``
MPTS-52 structures that MP places **above** the hull (E_hull > 0.1 eV/atom, ≤ 20 atoms, not in the bundled
set) with the potential, and reports

* the MAE of the potential's vs DFT formation energy per atom (eV/atom);
* E_hull of each against the bundled hull *with its own material removed* (leave-one-out), and the fraction
  classified correctly as stable / unstable at thresholds 0.1 and 0 eV/atom (truth: MP's DFT e_above_hull),
  next to the same numbers for the DFT formation energy on the same hull (the ceiling the hull allows).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from mattergen_kit.data.paths import source_path, verify_file
from mattergen_kit.evaluation.cache import building, load_arrays, save_arrays
from mattergen_kit.evaluation.hull import ConvexHull, ElementalReferences, fit_elemental_references
from mattergen_kit.evaluation.potentials import SEVENNET_VARIANT, limit_threads, load_potential
from mattergen_kit.evaluation.reference import DEFAULT_HULL, HULL_NAMES, bundled, cache_dir
from mattergen_kit.evaluation.relax import RelaxSettings, relax_structures

__all__ = ["static_energies", "fit", "measure"]


def static_energies(structures, batch_size: int = 32, progress: bool = True, device: str | None = None,
                    model: str = "chgnet") -> np.ndarray:
    """Total energies (eV) of structures as given: CHGNet batched single points, or SevenNet one by one."""
    from tqdm.auto import tqdm

    if model == "sevennet":
        from pymatgen.io.ase import AseAtomsAdaptor

        calc = load_potential("sevennet", device)
        out = []
        with warnings.catch_warnings(), limit_threads(1):
            warnings.simplefilter("ignore")
            for s in tqdm(structures, desc="SevenNet single points", disable=not progress):
                atoms = AseAtomsAdaptor.get_atoms(s)
                atoms.calc = calc
                out.append(float(atoms.get_potential_energy()))
        return np.asarray(out)
    if model != "chgnet":
        raise ValueError(f"unknown ML potential {model!r}: use 'chgnet' or 'sevennet'")
    opt = load_potential("chgnet", device)
    model = opt.calculator.model
    out = []
    for i in tqdm(range(0, len(structures), batch_size), desc="CHGNet single points", disable=not progress):
        chunk = structures[i:i + batch_size]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preds = model.predict_structure(chunk, task="e", batch_size=batch_size)
        preds = preds if isinstance(preds, list) else [preds]
        out.extend(float(p["e"]) * len(s) for p, s in zip(preds, chunk))
    return np.asarray(out)


def _select_covering(ds, n: int, per_element: int = 8, seed: int = 0) -> np.ndarray:
    """Up to ``n`` indices that include ≥ ``per_element`` structures of every element where possible."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))
    chosen, count = [], {}
    for i in order:
        els = [e.symbol for e in ds.structures[i].composition.elements]
        if any(count.get(e, 0) < per_element for e in els):
            chosen.append(i)
            for e in els:
                count[e] = count.get(e, 0) + 1
    rest = [i for i in order if i not in set(chosen)]
    chosen = chosen + rest[: max(0, n - len(chosen))]
    return np.sort(np.array(chosen[:max(n, len(chosen))]))


# Whether a potential's energies need MP2020 corrections to sit on MP's footing: CHGNet 0.3.0 is trained on MPtrj's
# corrected energies (no), SevenNet-0 (11Jul2024) on MPtrj's *uncorrected* energies (yes; Matbench Discovery applies
# MaterialsProject2020Compatibility to its predictions, models/sevennet/join_7net_preds.py there).
MP2020_BY_DEFAULT = {"chgnet": False, "sevennet": True}


def fit(n_fit: int = 3000, use_mp2020: bool | None = None, ridge: float = 1e-7, progress: bool = True,
        save: bool = True, model: str = "chgnet"):
    if use_mp2020 is None:
        use_mp2020 = MP2020_BY_DEFAULT[model]

    ds = bundled("train")
    idx = _select_covering(ds, n_fit)
    structs = [ds.structures[i] for i in idx]
    props = ds.properties.iloc[idx].reset_index(drop=True)

    cache = cache_dir() / f"{model}-static-train-{len(idx)}.npz"
    stored = load_arrays(cache)
    if stored is not None and np.array_equal(stored["idx"], idx):
        e = stored["energy"]
    else:
        t, c = time.perf_counter(), time.process_time()
        with building(f"{model} single points of {len(structs)} train structures", cache):
            e = static_energies(structs, progress=progress, model=model)
        save_arrays(cache, idx=idx, energy=e)
        print(f"{model} single points: {(time.perf_counter() - t) / len(structs):.3f} s/structure wall, "
              f"{(time.process_time() - c) / len(structs):.3f} s CPU")
    refs = fit_elemental_references([s.composition for s in structs], e, props["formation_energy_per_atom"],
                                    use_mp2020=use_mp2020, ridge=ridge, structures=structs,
                                    meta={"source": f"bundled train split, {_potential_name(model)} single points on "
                                                    "DFT structures"}, potential=model)
    if save:
        refs.save()
    return refs


def _unstable_set(n: int, seed: int = 0, atoms: tuple[int, int] = (1, 20), unstable_only: bool = True):
    """MPTS-52 structures not in the bundled set with ``atoms[0]..atoms[1]`` atoms: those MP places above the hull
    (E_hull > 0.1 eV/atom) when ``unstable_only``, else any (the large-cell set: 21–52 atoms, stable or not)."""
    known = set(bundled("all").properties["material_id"].astype(str))
    rels = [f"mpts_52/{s}.csv.gz" for s in ("val", "test")]
    for rel in rels:  # source files: a clear line naming `mattergen-kit fetch-data sources` when not fetched
        verify_file(rel)
    df = pd.concat([pd.read_csv(source_path(rel)) for rel in rels], ignore_index=True)
    df = df[~df["material_id"].isin(known)]
    if unstable_only:
        df = df[df["energy_above_hull"] > 0.1]
    df = df.sample(frac=1.0, random_state=seed)
    rows, structs = [], []
    for _, r in df.iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(r["cif"], fmt="cif")
        if not atoms[0] <= len(s) <= atoms[1]:
            continue
        structs.append(s)
        rows.append({"material_id": r["material_id"], "formation_energy_per_atom": r["formation_energy_per_atom"],
                     "e_above_hull": r["energy_above_hull"]})
        if len(structs) >= n:
            break
    return structs, pd.DataFrame(rows)


def _potential_name(model: str) -> str:
    if model == "sevennet":
        return f"SevenNet {SEVENNET_VARIANT} (sevenn {_version('sevenn')})"
    return f"CHGNet 0.3.0 (chgnet {_version('chgnet')})"


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "?"


def measure(n: int = 40, relax: bool = True, steps: int = 300, seed: int = 0, progress: bool = True,
            save: bool = True, model: str = "chgnet", store=None, n_large: int = 0, hull: str = DEFAULT_HULL) -> dict:
    """Calibration of ``model`` on ``n`` stable + ``n`` unstable held-out crystals and ``n_large`` MPTS-52 crystals
    with 21–52 atoms (module docstring), judged on the named ``hull``. Relaxations are appended to ``store``
    (default: the cache's ``calibration-relaxed.jsonl``) and reused from it."""

    refs = ElementalReferences.load(potential=model)
    te = bundled("test")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(te), min(n, len(te)), replace=False))
    stable_s = [te.structures[i] for i in idx]
    stable_p = te.properties.iloc[idx][["material_id", "formation_energy_per_atom", "e_above_hull"]]
    unst_s, unst_p = _unstable_set(n, seed)
    large_s, large_p = _unstable_set(n_large, seed, atoms=(21, 52), unstable_only=False) if n_large else ([], None)
    structs = stable_s + unst_s + large_s
    props = pd.concat([stable_p, unst_p] + ([large_p] if n_large else []), ignore_index=True)
    props["set"] = (["bundled-test"] * len(stable_s) + ["mpts52-unstable"] * len(unst_s)
                    + ["mpts52-large-cell"] * len(large_s))
    if relax:  # load the potential first: its start-up time is not part of a relaxation

        load_potential(model)
    t = time.perf_counter()
    res = None
    if relax:
        res = relax_structures(structs, RelaxSettings(model=model, steps=steps),
                               store=store or cache_dir() / "calibration-relaxed.jsonl", progress=progress,
                               batch_size=32 if model == "chgnet" else 1)
        energies = np.array([r["energy"] if r and r["ok"] else np.nan for r in res], float)
        finals = [Structure.from_dict(r["relaxed"]) if r and r["ok"] else s for r, s in zip(res, structs)]
    else:
        energies = static_energies(structs, progress=progress, model=model)
        finals = structs
    seconds = time.perf_counter() - t
    hull = ConvexHull(hull)
    ef_ml, eh_ml, eh_dft = [], [], []
    for s, (_, p), e in zip(finals, props.iterrows(), energies):
        ef = refs.formation_energy_per_atom(s.composition, e, s)
        ef_ml.append(ef)
        excl = {str(p["material_id"])}
        eh_ml.append(hull.e_above_hull(s.composition, ef, exclude=excl) if np.isfinite(ef) else np.nan)
        eh_dft.append(hull.e_above_hull(s.composition, p["formation_energy_per_atom"], exclude=excl))
    col_ef, col_eh = f"e_form_{model}", f"e_hull_{model}"
    props[col_ef] = ef_ml
    props[col_eh] = eh_ml
    props["e_hull_dft_on_bundled_hull"] = eh_dft
    props["n_atoms"] = [len(s) for s in structs]
    ok = props[col_ef].notna()
    err = (props[col_ef] - props["formation_energy_per_atom"])[ok]
    truth01 = props["e_above_hull"] <= 0.1
    truth0 = props["e_above_hull"] <= 1e-6

    def acc(pred, truth, thr):
        m = pred.notna()
        return float(((pred[m] <= thr) == truth[m]).mean()) if m.any() else None

    out = {"model": _potential_name(model), "hull": hull.name, "hull_sources": hull.meta()["hull_sources"],
           "n_stable_set": len(stable_s), "n_unstable_set": len(unst_s), "n_large_cell_set": len(large_s),
           "n_with_energy": int(ok.sum()), "relaxed": relax, "seconds_per_structure": seconds / max(1, len(structs)),
           "e_form_mae_eV_per_atom": float(err.abs().mean()),
           "e_form_mean_error_eV_per_atom": float(err.mean()),
           "e_form_mae_by_set": {k: float(g.abs().mean()) for k, g in err.groupby(props["set"][ok])}}
    for thr, truth, name in ((0.1, truth01, "0.1"), (1e-6, truth0, "0")):
        out[f"accuracy_stable_at_{name}"] = acc(props[col_eh], truth, thr)
        out[f"accuracy_stable_at_{name}_dft_on_bundled_hull"] = acc(props["e_hull_dft_on_bundled_hull"], truth, thr)
    m = props[col_eh].notna()
    pred01 = props[col_eh] <= 0.1
    out["confusion_at_0.1"] = {
        "true_stable_pred_stable": int((truth01 & pred01 & m).sum()),
        "true_stable_pred_unstable": int((truth01 & ~pred01 & m).sum()),
        "true_unstable_pred_stable": int((~truth01 & pred01 & m).sum()),
        "true_unstable_pred_unstable": int((~truth01 & ~pred01 & m).sum())}
    out["e_hull_mae_vs_mp_eV_per_atom"] = float((props[col_eh] - props["e_above_hull"])[m].abs().mean())
    out["by_set"] = {name: {"n": int(len(g)), "accuracy_stable_at_0.1": acc(g[col_eh], truth01[g.index], 0.1),
                            "accuracy_stable_at_0.1_dft": acc(g["e_hull_dft_on_bundled_hull"], truth01[g.index], 0.1),
                            "e_hull_mae_vs_mp_eV_per_atom": float((g[col_eh] - g["e_above_hull"]).abs().mean()),
                            "n_below_-0.1": int((g[col_eh] < -0.1).sum())}
                     for name, g in props.groupby("set")}
    if res is not None:  # per relaxation, from the stored results (a resumed run reuses them: its wall time is ~0)
        done = [r for r in res if r and r["ok"]]
        secs = np.array([r["seconds"] for r in done], float)
        cpu = np.array([r.get("cpu_seconds", np.nan) for r in done], float)
        out.update(relaxation_seconds_mean=float(secs.mean()), relaxation_seconds_median=float(np.median(secs)),
                   relaxation_cpu_seconds_mean=float(np.nanmean(cpu)) if np.isfinite(cpu).any() else None,
                   fire_steps_mean=float(np.mean([r["n_steps"] for r in done])),
                   converged_fraction=float(np.mean([r["converged"] for r in done])))
        per = out["relaxation_cpu_seconds_mean"] or out["relaxation_seconds_mean"]
        out["accuracy_stable_at_0.1_per_cpu_second"] = out["accuracy_stable_at_0.1"] / per
    if save:
        props.to_csv(cache_dir() / ("calibration.csv" if model == "chgnet" else f"calibration-{model}.csv"), index=False)
        refs.meta["calibration"] = out
        refs.save()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="chgnet", choices=["chgnet", "sevennet"], help="ML potential to calibrate")
    p.add_argument("--fit", action="store_true")
    p.add_argument("--n-fit", type=int, default=3000)
    p.add_argument("--mp2020", default=None, action=argparse.BooleanOptionalAction,
                   help="apply MP2020 corrections to the potential's energies (default: off for chgnet, on for "
                        "sevennet, which is trained on uncorrected energies)")
    p.add_argument("--measure", action="store_true")
    p.add_argument("--n", type=int, default=40, help="structures per class for --measure")
    p.add_argument("--n-large", type=int, default=0, help="MPTS-52 crystals with 21-52 atoms added to --measure")
    p.add_argument("--hull", default=DEFAULT_HULL, choices=list(HULL_NAMES), help="the hull to judge against")
    p.add_argument("--no-relax", action="store_true")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--no-save", action="store_true",
                   help="print only: keep the stored references and their calibration record unchanged")
    p.add_argument("--store", default=None, help="JSON-lines file of relaxations to reuse / append (--measure)")
    a = p.parse_args(argv)
    import contextlib
    import sys

    if a.fit:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON alone (potentials print on loading)
            refs = fit(a.n_fit, use_mp2020=a.mp2020, model=a.model, save=not a.no_save)
        print(json.dumps({k: v for k, v in refs.meta.items() if k != "structures_per_element"}, indent=1), flush=True)
    if a.measure:
        with contextlib.redirect_stdout(sys.stderr):
            out = measure(a.n, relax=not a.no_relax, steps=a.steps, model=a.model, save=not a.no_save, store=a.store,
                          n_large=a.n_large, hull=a.hull)
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
