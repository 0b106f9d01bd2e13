"""Adherence measurements of conditioned samples (studies/adherence.py) on real bundled crystals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mattergen_kit.studies.adherence import measure, score


@pytest.fixture(scope="module")
def crystals():
    from mattergen_kit.conditioning.labels import read_label_table
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("val", progress=False).subset(range(40))
    table = read_label_table().set_index("material_id").loc[ds.properties.material_id]
    return ds.structures, table


def test_space_group_and_chemical_system_scores(crystals):
    structures, table = crystals
    sg = measure(structures, "space_group")
    assert sg == table["space_group"].tolist()                         # spglib 0.1, as the labels
    target = int(table["space_group"].mode()[0])
    assert score(sg, "space_group", target)["hit_rate"] == pytest.approx((table["space_group"] == target).mean())
    systems = measure(structures, "chemical_system")
    s = score(systems, "chemical_system", systems[0])
    assert s["exact_system"] == pytest.approx(np.mean([x == systems[0] for x in systems]))
    assert s["in_system"] >= s["exact_system"] > 0


def test_scalar_shift(crystals):
    structures, table = crystals
    hhi = measure(structures, "hhi_production")
    assert np.allclose([h for h in hhi], table["hhi_production"].to_numpy(), rtol=1e-5, equal_nan=True)
    row = score([1.0, 2.0, 3.0], "band_gap", 4.0, unconditional_median=1.0)
    assert row["median"] == 2.0 and row["shift"] == pytest.approx(1 / 3)   # (2 − 1) / (4 − 1)
    with pytest.raises(ValueError, match="not measured here"):
        measure(structures, "e_above_hull")


def test_run_rows_and_resume(tmp_path):
    from mattergen_kit.conditioning import attach_adapter, get_spec
    from mattergen_kit.studies.adherence import run

    from mattergen_kit.generation import load_model

    model = load_model()                                                 # the bundled base + a fresh adapter
    attach_adapter(model.denoiser, [get_spec("chemical_system")])
    rows = run(model, "chemical_system", ["Li-O"], gammas=[0, 2], num=3, steps=5, out=tmp_path, progress=False)
    assert [r["gamma"] for r in rows] == [0.0, 2.0]
    assert rows[1]["in_system"] == 1.0                                   # the mask keeps samples in the system
    assert {"structural_validity", "uniqueness"} <= set(rows[1])
    again = run(model, "chemical_system", ["Li-O"], gammas=[0, 2], num=3, steps=5, out=tmp_path, progress=False)
    assert again == rows and len((tmp_path / "adherence.jsonl").read_text().splitlines()) == 2


def test_fast_sampler_rows_are_their_own_points(tmp_path):
    """A row sampled with the few-step sampler is a separate point from the reference sampler's row of the same
    request (same target, γ, n, steps): both are kept, resumed and told apart by ``sampler``, with their own samples;
    the fast row's crystals are those of generate(sampler="fast")."""
    from mattergen_kit.conditioning import attach_adapter, get_spec
    from mattergen_kit.generation import load_model
    from mattergen_kit.studies.adherence import current_rows, read_rows, run

    model = load_model()
    attach_adapter(model.denoiser, [get_spec("chemical_system")])
    ref = run(model, "chemical_system", ["Li-O"], gammas=[2], num=3, steps=4, out=tmp_path, progress=False)
    fast = run(model, "chemical_system", ["Li-O"], gammas=[2], num=3, steps=4, out=tmp_path, progress=False,
               sampler="fast")
    assert "sampler" not in ref[0] and fast[0]["sampler"] == "fast"
    assert fast[0]["in_system"] == 1.0
    direct = model.generate(3, seed=0, steps=4, conditions={"chemical_system": "Li-O"}, guidance_scale=2.0,
                            sampler="fast", progress=False)
    assert fast[0]["values"] == measure(direct, "chemical_system")
    assert {p.name for p in (tmp_path / "samples").iterdir()} == {"chemical_system_Li-O_g2.extxyz",
                                                                  "chemical_system_Li-O_g2_fast4.extxyz"}
    again = run(model, "chemical_system", ["Li-O"], gammas=[2], num=3, steps=4, out=tmp_path, progress=False,
                sampler="fast")
    assert again == fast and len(read_rows(tmp_path)) == 2 and len(current_rows(read_rows(tmp_path))) == 2


def test_a_fresh_adapter_does_not_move_the_band_gap(tmp_path):
    """Zero mix-in: γ = 1 (the conditional network alone) samples are the unconditional ones, so the median band
    gap shift is exactly 0. (γ = 2 runs both branches in one batch of 2B crystals; its float rounding differs from
    a batch of B by ~1e-6, which a 5-step sampler amplifies, so γ = 2 is not bitwise comparable.)"""
    from mattergen_kit.conditioning import attach_adapter, get_spec
    from mattergen_kit.studies.adherence import run
    from mattergen_kit.generation import load_model

    model = load_model()
    attach_adapter(model.denoiser, [get_spec("band_gap").fit_normalisation([0.0, 1.0, 4.0])])
    rows = run(model, "band_gap", [3.0], gammas=[0, 1], num=3, steps=5, progress=False)
    assert rows[0]["median"] == rows[1]["median"] and rows[1]["shift"] == 0.0 and "shift" not in rows[0]


def test_rows_keep_values_and_samples_and_the_proof_summarises_them(tmp_path):
    """Rows carry the per-sample values (the figures' distributions) and their samples as extxyz; the benchmark's
    summary and figures are drawn from those rows alone."""
    import importlib.util

    from ase.io import read

    from mattergen_kit.conditioning import attach_adapter, get_spec
    from mattergen_kit.studies.adherence import read_rows, run
    from mattergen_kit.generation import load_model

    model = load_model()
    attach_adapter(model.denoiser, [get_spec("space_group"), get_spec("hhi_production").fit_normalisation([1e3, 5e3])])
    run(model, "space_group", [225], gammas=[0, 2], num=3, steps=5, out=tmp_path, progress=False)
    run(model, "hhi_production", [1500.0], gammas=[0, 2], num=3, steps=5, out=tmp_path, progress=False)
    rows = read_rows(tmp_path)
    assert [(r["property"], r["gamma"]) for r in rows] == [("space_group", 0.0), ("space_group", 2.0),
                                                          ("hhi_production", 0.0), ("hhi_production", 2.0)]
    for r in rows:
        assert len(r["values"]) == 3 and 0.0 <= r["valid_and_unique"] <= min(r["structural_validity"], r["uniqueness"])
    sg_samples = read(tmp_path / "samples" / "space_group_225_g2.extxyz", index=":")
    assert len(sg_samples) == 3
    assert rows[1]["values"] == measure([a for a in _as_structures(sg_samples)], "space_group")
    finite = [v for v in rows[3]["values"] if v is not None and np.isfinite(v)]      # HHI is NaN for elements without data
    assert rows[3]["median"] == pytest.approx(np.median(finite)) and rows[3]["n_measured"] == len(finite)

    spec = importlib.util.spec_from_file_location("bench_conditioning", "benchmarks/bench_conditioning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = bench.summarise(tmp_path, tmp_path / "fig")
    assert "| 225 | 3 |" in text and "## hhi_production" in text
    assert {p.name for p in (tmp_path / "fig").glob("*.png")} == {
        "conditioning_space_group_hit_rate.png", "conditioning_hhi_production_shift.png",
        "conditioning_price_of_steering.png"}
    with pytest.raises(FileNotFoundError, match="bench_conditioning"):
        read_rows(tmp_path / "nothing")


def _as_structures(atoms_list):
    from pymatgen.io.ase import AseAtomsAdaptor

    return [AseAtomsAdaptor.get_structure(a) for a in atoms_list]


def test_novelty_rate_counts_train_crystals_as_not_novel():
    from mattergen_kit.studies.adherence import novelty_rate
    from mattergen_kit.evaluation.reference import bundled

    test, train = bundled("test").structures[:6], bundled("train").structures[:4]
    assert novelty_rate(test + train) == 0.6          # the 4 train crystals match themselves; test ones do not


def test_current_rows_keep_each_points_largest_run():
    from mattergen_kit.studies.adherence import current_rows, read_rows

    rows = read_rows("benchmarks/results/conditioning/adherence.jsonl")   # the committed proof, re-measured points
    current = current_rows(rows)
    key = lambda r: (r["property"], str(r["target"]), r["gamma"], r["steps"], bool(r.get("enforce_symmetry")))  # noqa: E731
    assert len({key(r) for r in current}) == len(current)                 # one row per point
    for r in rows:                                                        # nothing larger was dropped
        assert any(key(c) == key(r) and c["num"] >= r["num"] for c in current if c["property"] == r["property"]) \
            or r["num"] < max(c["num"] for c in current if c["property"] == r["property"])
    by_property = {}
    for r in current:
        by_property.setdefault(r["property"], set()).add(r["num"])
    assert all(len(ns) == 1 for ns in by_property.values())               # a property's table at one sample count
    assert len(current) < len(rows)                                       # the 64-sample band-gap rows are history
