r"""Resumable background labelling with the ML potential (CHGNet): magnetic density and bulk modulus.

    python -m mattergen_kit.studies.label_job --property magnetic_density --split train --limit 5000
    python -m mattergen_kit.studies.label_job --property bulk_modulus --split train --limit 1500
    python -m mattergen_kit.studies.label_job --property bulk_modulus --dataset aflow --split test \
        --limit 50 --out datasets/labels/aflow-test-chgnet-bulk-modulus.csv      (error vs AFLOW DFT)

Every result is appended to ``--out`` (default ``datasets/labels/mp-bundled-20-ml-labels.csv``) as one row
``material_id, property, value, status, seconds, model, dft_value`` and flushed at once; a rerun skips the
(material_id, property) pairs already in the file, so killing and restarting loses at most one structure.
Crystals are taken in a seeded random order (``--seed``), so ``--limit N`` is a representative sample and a
larger ``--limit`` later extends the same sample. Both labels are ML ESTIMATES, not DFT:

    magnetic_density = Σ_i |m_i| / V            m_i: CHGNet site magnetic moments (μB) on the given (DFT-
                                                relaxed MP) structure, V the cell volume (Å³) → μB/Å³
    bulk_modulus     CHGNet relaxation of cell and ions (FIRE, fmax 0.1 eV/Å, ≤ 300 steps), then the cell
                     scaled isotropically to V_k = V_0 (0.94 + 0.02 k), k = 0..6, ions relaxed at fixed cell
                     (fmax 0.1, ≤ 60 steps), Birch–Murnaghan fit of E(V) (pymatgen EOS):
                     E(V) = E_0 + 9 V_0 B_0 / 16 { [(V_0/V)^{2/3} − 1]^3 B_0' + [(V_0/V)^{2/3} − 1]^2 [6 − 4 (V_0/V)^{2/3}] }
                     B_0 in GPa; status "fit_failed" when the fit fails or B_0 is not in (0, 1000) GPa.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from mattergen_kit.conditioning.labels import ML_LABEL_TABLE, labels_dir

ML_PROPERTIES = ("magnetic_density", "bulk_modulus")
COLUMNS = ["material_id", "property", "value", "status", "seconds", "model", "dft_value"]
EOS_VOLUME_FACTORS = tuple(0.94 + 0.02 * k for k in range(7))


class Labeller:
    """CHGNet, loaded once; ``magnetic_density(s)`` and ``bulk_modulus(s)`` as in the module docstring."""

    def __init__(self):
        from chgnet.model import CHGNet, StructOptimizer

        self.model = CHGNet.load(verbose=False)  # weights ship with the chgnet wheel: no download
        self.optimizer = StructOptimizer(model=self.model)
        self.name = f"CHGNet {getattr(self.model, 'version', '') or ''}".strip()

    def magnetic_density(self, structure) -> float:
        magmoms = np.abs(np.asarray(self.model.predict_structure(structure)["m"], dtype=float))
        return float(magmoms.sum() / structure.volume)

    def bulk_modulus(self, structure) -> float:
        from pymatgen.analysis.eos import EOS

        relaxed = self.optimizer.relax(structure, fmax=0.1, steps=300, verbose=False)["final_structure"]
        volumes, energies = [], []
        for f in EOS_VOLUME_FACTORS:
            s = relaxed.copy()
            s.scale_lattice(relaxed.volume * f)
            traj = self.optimizer.relax(s, fmax=0.1, steps=60, relax_cell=False, verbose=False)["trajectory"]
            volumes.append(s.volume)
            energies.append(float(traj.energies[-1]))  # total energy (eV) of the cell
        b0 = float(EOS("birch_murnaghan").fit(volumes, energies).b0_GPa)
        if not np.isfinite(b0) or not 0 < b0 < 1000:
            raise FloatingPointError(f"B0 = {b0} GPa")
        return b0


def _cut_torn_tail(path: Path) -> None:
    """A job killed mid-write can leave a last line without its newline: cut it (it is redone)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _done(path: Path, prop: str) -> set[str]:
    _cut_torn_tail(path)
    if not path.is_file():
        return set()
    with open(path, newline="") as f:
        return {r["material_id"] for r in csv.DictReader(f) if r["property"] == prop}


def run(prop: str, dataset: str = "bundled", split: str = "train", limit: int | None = None, seed: int = 0,
        out: str | Path | None = None, progress: bool = True, labeller: Labeller | None = None) -> Path:
    """Label up to ``limit`` crystals of ``dataset``/``split`` (seeded order), appending to ``out``; resumes."""
    from tqdm.auto import tqdm

    if prop not in ML_PROPERTIES:
        raise ValueError(f"property must be one of {ML_PROPERTIES}, got {prop!r}")
    out = Path(out) if out is not None else labels_dir() / ML_LABEL_TABLE
    out.parent.mkdir(parents=True, exist_ok=True)
    from mattergen_kit import datasets

    ds = (datasets.load_bundled(split, progress=progress) if dataset == "bundled"
          else datasets.load_aflow_bulk_modulus(split, progress=progress) if dataset == "aflow" else None)
    if ds is None:
        raise ValueError(f"dataset must be 'bundled' or 'aflow', got {dataset!r}")
    order = np.random.default_rng(seed).permutation(len(ds))[: limit if limit is not None else len(ds)]
    ids = ds.properties["material_id"].astype(str).to_numpy()
    done = _done(out, prop)
    todo = [int(i) for i in order if ids[i] not in done]
    print(f"{prop}: {len(order) - len(todo)} of {len(order)} already in {out}; labelling {len(todo)}", flush=True)
    if not todo:
        return out
    labeller = labeller or Labeller()
    fn = getattr(labeller, prop)
    dft = ds.properties["bulk_modulus"].to_numpy() if "bulk_modulus" in ds.properties else None
    new_file = not out.is_file() or out.stat().st_size == 0
    structures = ds.structures
    with open(out, "a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(COLUMNS)
        for i in tqdm(todo, desc=f"{prop} ({dataset}/{split})", disable=not progress, mininterval=5):
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    value, status = fn(structures[i]), "ok"
            except Exception as err:  # noqa: BLE001 - a failed crystal is recorded (status) and skipped
                value, status = float("nan"), f"failed: {type(err).__name__}: {str(err)[:80]}"
            writer.writerow([ids[i], prop, f"{value:.6g}", status, f"{time.perf_counter() - start:.3f}",
                             labeller.name, "" if dft is None else f"{float(dft[i]):.6g}"])
            f.flush()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mattergen_kit.studies.label_job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--property", required=True, choices=ML_PROPERTIES)
    p.add_argument("--dataset", default="bundled", choices=["bundled", "aflow"])
    p.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    p.add_argument("--limit", type=int, default=None, help="label at most this many crystals (seeded order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help=f"CSV to append to (default datasets/labels/{ML_LABEL_TABLE})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    path = run(args.property, args.dataset, args.split, args.limit, args.seed, args.out, not args.no_progress)
    print(f"labels in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
