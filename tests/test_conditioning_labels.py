"""Conditioning labels: the committed table, attaching labels to datasets, the resumable ML labelling job."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from mattergen_kit.conditioning.labels import attach_labels, read_label_table, structure_labels


@pytest.fixture(scope="module")
def table():
    return read_label_table()


def test_committed_table_covers_the_bundled_set(table):
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("all", progress=False)
    assert set(table.material_id) == set(ds.properties.material_id) and table.material_id.is_unique
    assert table.space_group.between(1, 230).all()
    merged = ds.properties.merge(table, on="material_id", suffixes=("_ds", ""))
    for col in ("band_gap", "formation_energy_per_atom", "e_above_hull"):   # MP columns, NaN where MP has none
        a, b = merged[f"{col}_ds"].to_numpy(), merged[col].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-5)
    assert merged.band_gap.isna().sum() == 3495                              # the MPTS-52 rows
    assert (merged.spacegroup == merged.space_group).mean() > 0.99           # spglib 0.1 vs the source's numbers


def test_table_rows_are_recomputed_from_the_structures(table, real_rows):
    from pymatgen.core import Structure
    from mattergen_kit import canonicalize_structure

    by_id = table.set_index("material_id")
    for _, row in real_rows.head(8).iterrows():
        if row.material_id not in by_id.index:
            continue
        labels = structure_labels(canonicalize_structure(Structure.from_str(row.cif, fmt="cif")))
        ref = by_id.loc[row.material_id]
        assert labels["chemical_system"] == ref.chemical_system
        assert labels["space_group"] == ref.space_group
        assert labels["hhi_production"] == pytest.approx(ref.hhi_production, rel=1e-5)


def test_hhi_is_weight_fraction_weighted():
    from pymatgen.analysis.hhi import HHIModel
    from pymatgen.core import Composition, Lattice, Structure

    s = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    model, comp = HHIModel(), Composition("NaCl")
    w = {el: comp.get_wt_fraction(el) for el in comp}
    expected = sum(w[el] * model.get_hhi_production(el.symbol) for el in comp)
    assert structure_labels(s)["hhi_production"] == pytest.approx(expected)
    assert structure_labels(s)["space_group"] == 221 and structure_labels(s)["chemical_system"] == "Cl-Na"


def test_attach_labels_by_material_id(table):
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("val", progress=False).subset(range(30))
    attach_labels(ds, ["space_group", "band_gap"], labels=table)
    expected = table.set_index("material_id").loc[ds.properties.material_id, "space_group"].astype(float).to_numpy()
    assert np.array_equal(ds.properties["space_group"].to_numpy(), expected)
    assert ds[0].properties["space_group"].dtype.is_floating_point
    with pytest.raises(ValueError, match=r"no \['magnetic_density'\] labels in the label tables"):
        attach_labels(ds, ["magnetic_density"], labels=table)


def test_label_job_appends_and_resumes(tmp_path):
    from mattergen_kit.studies import label_job

    out = tmp_path / "ml.csv"
    labeller = label_job.Labeller()
    label_job.run("magnetic_density", split="val", limit=2, out=out, progress=False, labeller=labeller)
    with open(out, "a") as f:
        f.write("mp-torn,magnetic_den")                                       # a kill in the middle of a write
    label_job.run("magnetic_density", split="val", limit=3, out=out, progress=False, labeller=labeller)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and len({r["material_id"] for r in rows}) == 3      # resumed: the first 2 not redone
    assert "mp-torn" not in {r["material_id"] for r in rows}                  # the torn line was cut
    assert all(r["status"] == "ok" and float(r["value"]) >= 0 for r in rows)
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("val", progress=False)
    i = int(np.flatnonzero(ds.properties.material_id == rows[0]["material_id"])[0])
    s = ds.structures[i]
    m = np.abs(labeller.model.predict_structure(s)["m"]).sum() / s.volume   # Σ|m_i| / V
    assert float(rows[0]["value"]) == pytest.approx(m, rel=1e-4)
    with pytest.raises(ValueError, match="property must be one of"):
        label_job.run("band_gap", out=out)


def test_eos_bulk_modulus_of_rocksalt_nacl():
    """CHGNet EOS on NaCl (rocksalt, a = 5.64 Å): experiment ~24-25 GPa, PBE ~22-24 GPa."""
    from pymatgen.core import Lattice, Structure

    from mattergen_kit.studies.label_job import Labeller

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    b0 = Labeller().bulk_modulus(nacl.get_primitive_structure())
    assert 15.0 < b0 < 35.0, b0


def test_extra_train_adds_aflow_dft_bulk_moduli_and_fills_label_gaps(table):
    """configs/conditioned_cpu.yaml trains bulk modulus on AFLOW's DFT values: the AFLOW crystals (<= max_atoms)
    join the train split with their own labels kept, the MP crystals get theirs from the label table."""
    from mattergen_kit.training import TrainConfig
    from mattergen_kit.training.module import _load_extra

    aflow = _load_extra("aflow_bulk_modulus", "val", max_atoms=12)
    assert len(aflow) > 100 and int(np.max(aflow.num_atoms)) <= 12
    assert aflow.properties["bulk_modulus"].notna().all() and aflow.properties["space_group"].between(1, 230).all()
    from mattergen_kit.data.dataset import CrystalDataset
    from mattergen_kit.datasets import load_bundled

    mp = load_bundled("val", progress=False).subset(range(30))
    both = CrystalDataset.concat([mp, aflow.subset(range(20))])
    dft = both.properties["bulk_modulus"].to_numpy().copy()
    attach_labels(both, ["space_group", "bulk_modulus", "band_gap"], labels=table.assign(bulk_modulus=-1.0))
    assert np.array_equal(both.properties["bulk_modulus"].to_numpy()[30:], dft[30:])   # AFLOW's DFT values kept
    assert (both.properties["bulk_modulus"].to_numpy()[:30] == -1.0).all()            # MP gaps filled from the table
    expected = table.set_index("material_id").loc[mp.properties.material_id, "space_group"].astype(float)
    assert np.array_equal(both.properties["space_group"].to_numpy()[:30], expected.to_numpy())
    assert np.isnan(both.properties["band_gap"].to_numpy()[30:]).all()                # no MP band gap for AFLOW rows
    with pytest.raises(ValueError, match="extra_train: unknown sets"):
        TrainConfig(extra_train=["icsd"])
