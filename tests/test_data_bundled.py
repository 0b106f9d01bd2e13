"""The bundled "mp-bundled-20" pipeline: filters, dedupe, split file, checksums, tensor cache.

Runs on a small copy of the real raw files (``mini_root``) so that it is fast; one test checks the real
full cache when it exists (CI builds it once with benchmarks/bench_data_load.py).
"""

import gzip
import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from mattergen_kit import datasets
from mattergen_kit.data import datasets as core
from mattergen_kit.data.paths import DataIntegrityError


def _raw(root):
    frames = []
    for rel in core.BUNDLED_FILES:
        df = pd.read_csv(root / rel)
        df["_file"] = rel
        df["_row"] = range(len(df))
        frames.append(df)
    return frames


def test_bundled_filters_dedupe_and_accounting(mini_env):
    ds = datasets.load_bundled("all", progress=False)
    raw = _raw(mini_env)
    n_rows = sum(len(f) for f in raw)
    assert ds.report.kept == len(ds) and ds.report.kept + ds.report.n_skipped == n_rows
    props = ds.properties
    assert props.material_id.is_unique
    assert (props.e_above_hull <= core.E_ABOVE_HULL_MAX).all()
    assert (props.formation_energy_per_atom <= core.FORMATION_ENERGY_MAX).all()
    assert ds.num_atoms.max() <= 20 and ds.num_atoms.min() >= 1
    for col in ("material_id", "formula", "band_gap", "formation_energy_per_atom", "e_above_hull", "spacegroup",
                "chemical_system", "hhi_production", "hhi_reserve", "source", "split"):
        assert col in props.columns, col
    assert props.spacegroup.between(1, 230).all()
    # MPTS-52 rows whose id is in MP-20 are reported as duplicates, never kept twice
    mp20_ids = set(raw[0].material_id) | set(raw[1].material_id)
    dups = [s for s in ds.report.skipped if s.kind == "duplicate"]
    assert dups and all(s.material_id in mp20_ids and s.source.startswith("mpts_52") for s in dups)
    # every skip names its file and row and the row really is that material
    by_file = {f["_file"].iloc[0]: f for f in raw}
    for s in ds.report.skipped:
        assert by_file[s.source].material_id.iloc[s.row] == s.material_id
    # excluded elements never appear
    symbols = {el for cs in props.chemical_system for el in cs.split("-")}
    assert not symbols & set(core.EXCLUDED_ELEMENTS)
    # the labels agree with the structures
    s0 = ds.structures[0]
    assert props.formula.iloc[0] == s0.composition.reduced_formula
    from mattergen_kit.data.parsing import hhi

    assert np.isclose(props.hhi_production.iloc[0], hhi(s0.composition)[0])


def test_split_file_is_written_and_follows_the_hash(mini_env):
    ds = datasets.load_bundled("all", progress=False)
    table = pd.read_csv(mini_env / "splits" / "mp-bundled-20.csv", dtype=str)
    assert sorted(table.material_id) == sorted(ds.properties.material_id)
    assert all(datasets.split_of(m) == s for m, s in zip(table.material_id, table.split))
    parts = {s: datasets.load_bundled(s, progress=False) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == len(ds)
    assert set(parts["train"].properties.material_id).isdisjoint(parts["test"].properties.material_id)
    assert (parts["val"].properties.split == "val").all()


def test_split_of_is_about_80_10_10():
    ids = [f"mp-{i}" for i in range(20000)]
    frac = pd.Series([datasets.split_of(i) for i in ids]).value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.015 and abs(frac["val"] - 0.1) < 0.01 and abs(frac["test"] - 0.1) < 0.01


def test_cache_second_load_is_fast_and_identical(mini_root, monkeypatch, tmp_path):
    monkeypatch.setenv("MATTERGEN_KIT_DATA", str(mini_root))
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    cold = datasets.load_bundled("train", progress=False)
    t_cold = time.perf_counter() - t0
    assert list((tmp_path / "cache").glob("mp-bundled-20-*.pt"))
    t0 = time.perf_counter()
    warm = datasets.load_bundled("train", progress=False)
    t_warm = time.perf_counter() - t0
    assert t_warm < t_cold and t_warm < 2.0
    np.testing.assert_array_equal(cold.atom_types, warm.atom_types)
    np.testing.assert_array_equal(cold.frac_coords, warm.frac_coords)
    pd.testing.assert_frame_equal(cold.properties, warm.properties)
    assert str(cold.report) == str(warm.report)


def test_corrupt_raw_file_is_rejected(mini_root, monkeypatch, tmp_path):
    root = tmp_path / "datasets"
    shutil.copytree(mini_root, root)
    monkeypatch.setenv("MATTERGEN_KIT_DATA", str(root))
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    target = root / "mpts_52" / "val.csv.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match=r"mpts_52/val\.csv\.gz.*corrupt"):
        datasets.load_bundled("train", progress=False)
    target.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        datasets.load_bundled("train", progress=False)


def test_bad_split_name():
    with pytest.raises(ValueError, match="train"):
        datasets.load_bundled("training")


def test_num_atoms_histogram(mini_env):
    p = datasets.num_atoms_histogram("train")
    ds = datasets.load_bundled("train", progress=False)
    assert p.shape == (21,) and np.isclose(p.sum(), 1.0) and p[0] == 0
    assert np.allclose(p, np.bincount(ds.num_atoms, minlength=21) / len(ds))


def test_aflow_and_phases(mini_env):
    ds = datasets.load_aflow_bulk_modulus("val", progress=False)
    raw = pd.read_csv(mini_env / "aflow_bulk_modulus" / "val.csv.gz")
    assert len(ds) + ds.report.n_skipped == len(raw)
    kept_rows = [int(m.rsplit("-", 1)[1]) for m in ds.properties.material_id]
    np.testing.assert_allclose(ds.properties.bulk_modulus, raw.bulk_modulus.iloc[kept_rows])
    assert ds.properties.hhi_reserve.notna().all()
    ph = datasets.load_mp20_phases()
    src = pd.read_parquet(mini_env / "mp20_phases" / "mp20_phases.parquet")
    assert len(ph) == len(src) and list(ph.material_id) == list(src.material_id)
    assert (ph.num_atoms == src.species_at_sites.map(len)).all()
    assert {"chemical_system", "hhi_production", "formation_energy_per_atom"} <= set(ph.columns)


def test_real_bundled_cache_if_built():
    """The real full set, only when its cache exists (no 4-minute build inside the test run)."""
    from mattergen_kit.data.paths import cache_root

    if not os.environ.get("MATTERGEN_KIT_FULL_DATA_TESTS") and not list(cache_root().glob("mp-bundled-20-*.pt")):
        pytest.skip("full bundled cache not built (python benchmarks/bench_data_load.py builds it)")
    parts = {s: datasets.load_bundled(s, progress=False) for s in ("train", "val", "test")}
    total = sum(len(p) for p in parts.values())
    assert 15000 < total < 19000
    assert abs(len(parts["train"]) / total - 0.8) < 0.02
    p = datasets.num_atoms_histogram("train")
    assert np.isclose(p.sum(), 1.0)
    dens = parts["train"].average_density()
    assert 0.04 < dens < 0.07
