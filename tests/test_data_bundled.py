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
    target.unlink()  # a source file not fetched, and no precomputed set or cache to fall back on: say how to get it
    with pytest.raises(FileNotFoundError, match="has to be built from its source files.*fetch-data sources"):
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


# ============================================================================================ mp-bundled-52
@pytest.fixture()
def mini52(mini_root, monkeypatch, tmp_path):
    """The mini copy plus mini mp20_extra files: real rows, one row whose material id is already in the mini
    mp-bundled-20, and one real crystal of mp20_biternary re-listed under a new id (a structure duplicate)."""
    root = tmp_path / "datasets"
    shutil.copytree(mini_root, root)
    extra = root / "mp20_extra"
    extra.mkdir()
    from mattergen_kit.data.paths import CHECKOUT_DATA

    mp20 = pd.read_csv(CHECKOUT_DATA / "mp20_extra" / "mp20_rows.csv.gz").head(30)
    base_row = pd.read_csv(root / "mp20_biternary" / "val.csv.gz").iloc[[0, 1]].copy()
    base_row["source"] = "test"
    same_id, same_structure = base_row.iloc[[0]].copy(), base_row.iloc[[1]].copy()
    same_structure["material_id"] = "mp-test-structure-duplicate"
    mp20 = pd.concat([mp20, same_id, same_structure], ignore_index=True)
    mp40 = pd.read_csv(CHECKOUT_DATA / "mp20_extra" / "mp40_rows.csv.gz").head(30)
    for df, name in ((mp20, "mp20_rows.csv.gz"), (mp40, "mp40_rows.csv.gz")):
        with gzip.open(extra / name, "wt") as f:
            df.to_csv(f, index=False)
    import hashlib

    with open(root / "SHA256SUMS", "a") as f:
        for name in ("mp20_rows.csv.gz", "mp40_rows.csv.gz"):
            f.write(f"{hashlib.sha256((extra / name).read_bytes()).hexdigest()}  ./mp20_extra/{name}\n")
    monkeypatch.setenv("MATTERGEN_KIT_DATA", str(root))
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    return root, same_id.material_id.iloc[0], base_row.material_id.iloc[1]


def test_bundled_52_keeps_the_20_set_and_dedupes(mini52):
    from mattergen_kit.data.bundled import write_large_record
    from mattergen_kit.data.bundled_large import NEW_FILES, SPLIT_SEED_52

    root, same_id, original = mini52
    with pytest.raises(FileNotFoundError, match="build_bundled_52"):
        datasets.load_bundled("all", max_atoms=52, progress=False)
    counts = write_large_record(workers=1, progress=False)
    assert counts["structure_duplicates"] >= 1
    record = pd.read_csv(root / "splits" / "mp-bundled-52.csv", dtype=str, keep_default_na=False)
    dup = record.set_index("material_id").loc["mp-test-structure-duplicate"]
    assert dup.split == "duplicate" and dup.duplicate_of == original
    assert same_id not in set(record.material_id)  # an id already in: never a new row
    kept = record[record.split != "duplicate"]
    assert all(datasets.split_of(m, seed=SPLIT_SEED_52) == s for m, s in zip(kept.material_id, kept.split))

    small = datasets.load_bundled("all", progress=False)
    large = datasets.load_bundled("all", max_atoms=52, progress=False)
    # the 20-atom set is inside, every crystal in its old split, arrays unchanged
    head = large.subset(np.arange(len(small)))
    assert list(head.properties.material_id) == list(small.properties.material_id)
    assert list(head.properties.split) == list(small.properties.split)
    np.testing.assert_array_equal(head.frac_coords, small.frac_coords)
    props = large.properties
    assert props.material_id.is_unique and "mp-test-structure-duplicate" not in set(props.material_id)
    assert len(large) == len(small) + len(kept)
    assert large.num_atoms.max() <= 52 and (large.num_atoms > 20).any()
    assert (props.e_above_hull.dropna() <= core.E_ABOVE_HULL_MAX).all()
    # every raw row is kept once or skipped once
    n_rows = sum(len(pd.read_csv(root / rel)) for rel in set(core.BUNDLED_FILES) | set(NEW_FILES))
    assert large.report.kept == len(large) and large.report.kept + large.report.n_skipped == n_rows
    reasons = [s.reason for s in large.report.skipped if s.material_id == "mp-test-structure-duplicate"]
    assert len(reasons) == 1 and original in reasons[0]
    # the prior covers N up to 52
    p = datasets.num_atoms_histogram("train", max_atoms=52)
    train = datasets.load_bundled("train", max_atoms=52, progress=False)
    assert p.shape == (53,) and np.allclose(p, np.bincount(train.num_atoms, minlength=53) / len(train))
    # a record that lacks a new row is refused with what to do
    record[record.material_id != kept.material_id.iloc[0]].to_csv(root / "splits" / "mp-bundled-52.csv", index=False)
    with pytest.raises(ValueError, match="build_bundled_52"):
        datasets.load_bundled("all", max_atoms=52, progress=False)


def test_bundled_max_atoms_must_be_20_or_52():
    with pytest.raises(ValueError, match="52"):
        datasets.load_bundled("train", max_atoms=30)


def test_real_bundled_52_if_built():
    """The real mp-bundled-52, only when its cache exists: the counts of datasets/README.md, the old splits kept."""
    from mattergen_kit.data.paths import cache_root

    from mattergen_kit.data.paths import missing_sources

    if not os.environ.get("MATTERGEN_KIT_FULL_DATA_TESTS") and not list(cache_root().glob("mp-bundled-52-[0-9a-f]*.pt")):
        pytest.skip("mp-bundled-52 cache not built (python tools/build_bundled_52.py builds it)")
    if missing_sources() and not list(cache_root().glob("mp-bundled-52-[0-9a-f]*.pt")):
        pytest.skip(f"mp-bundled-52 is built from source files not fetched here ({', '.join(missing_sources())}): "
                    "run `mattergen-kit fetch-data sources` (make test does, from ../shared/data when present)")
    large = datasets.load_bundled("all", max_atoms=52, progress=False)
    small = datasets.load_bundled("all", progress=False)
    assert len(large) == 26749 and large.num_atoms.max() == 52
    assert large.properties.split.value_counts().to_dict() == {"train": 21447, "val": 2621, "test": 2681}
    old = dict(zip(small.properties.material_id, small.properties.split))
    assert all(old[m] == s for m, s in zip(large.properties.material_id, large.properties.split) if m in old)
    assert int((large.num_atoms > 20).sum()) == 4763 + 1459


def test_pack_and_train_on_bundled_52(mini52, tmp_path):
    """fast.py on mp-bundled-52: the pack carries the 0..52 prior; two CPU steps with the k-nearest graph and the
    cell-choice augmentation write a float16 model that load_model reads and that samples a 30-atom cell."""
    import torch

    from mattergen_kit.data.bundled import write_large_record
    from mattergen_kit.generation import load_model
    from mattergen_kit.training.fast import FastConfig, load_pack, pack_bundled, shipped_model_shape, train_fast

    write_large_record(workers=1, progress=False)
    pack = load_pack(pack_bundled(tmp_path / "pack.pt", max_atoms=52))
    train = datasets.load_bundled("train", max_atoms=52, progress=False)
    assert pack["name"] == "mp-bundled-52" and len(pack["num_atoms_histogram"]) == 53
    assert int(pack["splits"]["train"]["num_atoms"].max()) > 20 and len(pack["splits"]["train"]["num_atoms"]) == len(train)
    cfg = FastConfig(pack=str(tmp_path / "pack.pt"), out=str(tmp_path / "run"), batch_size=4,
                     model=shipped_model_shape(hidden_dim=16, num_layers=1, graph="knn:8"),
                     max_steps=2, minutes=1.0, val_every_s=1e9, device="cpu", bf16=False,
                     cell_augment=0.5, weights_dtype="float16")
    model = load_model(train_fast(cfg, log=lambda m: None))
    assert model.denoiser.config.graph == "knn:8" and model.num_atoms_prior.max_atoms == 52
    batch = model.sample(1, seed=0, steps=2, num_atoms=30, progress=False)
    assert batch.num_atoms.tolist() == [30] and torch.isfinite(batch.frac_coords).all()


def test_conventional_cells_in_the_pack(mini52, tmp_path):
    """pack --conventional: every stored conventional cell is its crystal (StructureMatcher, same volume per atom)
    with more atoms; DeviceCrystals swaps exactly the crystals that have one; two CPU steps train with it."""
    import torch
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from mattergen_kit.data.bundled import write_large_record
    from mattergen_kit.training.fast import (DeviceCrystals, FastConfig, load_pack, pack_bundled, shipped_model_shape,
                                             train_fast)

    write_large_record(workers=1, progress=False)
    pack = load_pack(pack_bundled(tmp_path / "pack.pt", max_atoms=52, conventional=True))
    train = datasets.load_bundled("train", max_atoms=52, progress=False)
    conv = pack["splits"]["train"]["conventional"]
    assert len(conv["source"]) >= 3 and int(conv["num_atoms"].max()) <= 52
    from mattergen_kit.data.crystal_batch import CrystalBatch

    cells = CrystalBatch(conv["atom_types"], conv["frac_coords"], conv["lattice"], conv["num_atoms"]).to_structures()
    matcher = StructureMatcher()
    for source, cell in zip(conv["source"].tolist(), cells):
        original = train.structures[source]
        assert len(cell) > len(original) and matcher.fit(cell, original)
        assert abs(cell.volume / len(cell) - original.volume / len(original)) < 1e-3 * original.volume / len(original)
    crystals = DeviceCrystals(pack["splits"]["train"], torch.device("cpu"))
    assert len(crystals) == len(train)
    idx = torch.arange(len(train))
    swapped = crystals.conventional(idx, 1.0)
    assert torch.equal(swapped != idx, torch.isin(idx, conv["source"]))
    batch = crystals.batch(swapped[conv["source"][:1]])
    assert torch.equal(batch.atom_types, conv["atom_types"][: int(conv["num_atoms"][0])])
    cfg = FastConfig(pack=str(tmp_path / "pack.pt"), out=str(tmp_path / "run"), batch_size=4,
                     model=shipped_model_shape(hidden_dim=16, num_layers=1),
                     max_steps=2, minutes=1.0, val_every_s=1e9, device="cpu", bf16=False, conventional=0.5)
    assert train_fast(cfg, log=lambda m: None).exists()
