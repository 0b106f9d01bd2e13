"""Samples drawn elsewhere (a GPU) and judged here: mattergen_kit.presampled on real bundled crystals."""

from __future__ import annotations

import pytest
import torch

from mattergen_kit.presampled import STORE_FORMAT, PresampledModel, job_key


@pytest.fixture(scope="module")
def store():
    """A store whose 'space_group=225, γ=2' request holds 24 real val crystals (as a GPU run would hold samples)."""
    from mattergen_kit.data import CrystalBatch
    from mattergen_kit.datasets import load_bundled

    ds = load_bundled("val", progress=False).subset(range(24))
    batch = CrystalBatch.collate([ds[i] for i in range(24)])
    key = job_key("mattergen_kit/checkpoints/mp_bundled_20_conditioned.npz", 24, 0, 100, {"space_group": 225}, 2.0)
    job = {"atom_types": batch.atom_types, "frac_coords": batch.frac_coords, "lattice": batch.lattice,
           "num_atoms": batch.num_atoms, "seconds": 1.0, "batch_size": 24, "device": "cpu", "label": "sg225_g2"}
    return {"format": STORE_FORMAT, "jobs": {key: job}}, ds


def test_adherence_judges_a_store_like_a_model(store, tmp_path):
    from mattergen_kit.studies.adherence import measure, run

    data, ds = store
    model = PresampledModel(data, "mp_bundled_20_conditioned.npz")
    rows = run(model, "space_group", [225], gammas=(2.0,), num=24, steps=100, out=tmp_path, progress=False)
    truth = measure(ds.structures, "space_group")
    assert rows[0]["hit_rate"] == pytest.approx(sum(sg == 225 for sg in truth) / 24)
    assert rows[0]["drawn_on"]["model"] == "mp_bundled_20_conditioned.npz"
    got = model.generate(24, seed=0, steps=100, conditions={"space_group": 225}, guidance_scale=2.0)
    assert [s.composition.reduced_formula for s in got] == [s.composition.reduced_formula for s in ds.structures]


def test_a_request_the_store_lacks_is_a_clear_error(store, tmp_path):
    data, _ = store
    model = PresampledModel(data, "mp_bundled_20_conditioned.npz")
    with pytest.raises(KeyError, match="draw them with tools/sample_on_device.py"):
        model.generate(24, seed=0, steps=200, conditions={"space_group": 225}, guidance_scale=2.0)
    with pytest.raises(ValueError, match="drawn here"):
        model.generate(24, seed=0, steps=100, conditions={"space_group": 225}, guidance_scale=2.0,
                       enforce_symmetry=True)
    bad = tmp_path / "x.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(ValueError, match="not a store"):
        PresampledModel(bad, "m.pt")


def test_the_device_tool_draws_what_generate_draws(tmp_path):
    """tools/sample_on_device.py draw (here on CPU) stores exactly the crystals generate() gives for the same
    request and batch size, and the store serves them back under the request's key."""
    import importlib.util
    import json
    from pathlib import Path

    import mattergen_kit as mk

    path = Path(__file__).resolve().parents[1] / "tools" / "sample_on_device.py"
    spec = importlib.util.spec_from_file_location("sample_on_device", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    plan = [dict(model=tool.BASE, num=3, seed=5, steps=4, conditions=None, guidance_scale=0.0, label="base")]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # draw keeps torch's thread count (a device's); generate() samples with 1 thread: the
    try:                      # same crystals need the same summation order
        store = tool.draw(plan, tmp_path / "store.pt", "cpu", batch_size=2, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert len(store["jobs"]) == 1
    served = PresampledModel(tmp_path / "store.pt", tool.BASE).generate(3, seed=5, steps=4)
    direct = mk.load_model().generate(3, seed=5, steps=4, batch_size=2, progress=False)
    assert [s.composition.formula for s in served] == [s.composition.formula for s in direct]
    assert all(abs(a.lattice.volume - b.lattice.volume) < 1e-4 for a, b in zip(served, direct))
    again = tool.draw(plan, tmp_path / "store.pt", "cpu", batch_size=2, log=lambda m: None)  # resumes: nothing redrawn
    assert torch.equal(again["jobs"][next(iter(again["jobs"]))]["frac_coords"],
                       store["jobs"][next(iter(store["jobs"]))]["frac_coords"])


def test_plan_for_a_per_property_model_skips_what_a_store_holds(tmp_path):
    """`plan --model M --properties P --no-base --skip-store S`: only P's requests, for M, without those S holds,
    and the γ = 0 request once."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = lambda *a: subprocess.run([sys.executable, "tools/sample_on_device.py", "plan", *a], cwd=root,  # noqa: E731
                                    capture_output=True, text=True, check=True)
    run("--out", str(tmp_path / "all.json"), "--no-base", "--properties", "band_gap", "--model", "runs/x/bg.pt")
    jobs = json.loads((tmp_path / "all.json").read_text())
    assert {j["model"] for j in jobs} == {"runs/x/bg.pt"}
    assert sum(j["guidance_scale"] == 0 for j in jobs) == 1 and len(jobs) == 1 + 2 * 3   # 2 targets × γ 1, 2, 4
    assert all(j["conditions"] is None or set(j["conditions"]) == {"band_gap"} for j in jobs)
    held = jobs[1]
    store = {"format": STORE_FORMAT, "jobs": {job_key(held["model"], held["num"], held["seed"], held["steps"],
                                                      held["conditions"], held["guidance_scale"]): {}}}
    torch.save(store, tmp_path / "store.pt")
    run("--out", str(tmp_path / "rest.json"), "--no-base", "--properties", "band_gap", "--model", "runs/x/bg.pt",
        "--skip-store", str(tmp_path / "store.pt"))
    rest = json.loads((tmp_path / "rest.json").read_text())
    assert len(rest) == len(jobs) - 1 and held not in rest
    bad = subprocess.run([sys.executable, "tools/sample_on_device.py", "plan", "--out", str(tmp_path / "b.json"),
                          "--properties", "band_gapp"], cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "band_gapp" in bad.stderr


def test_a_text_store_round_trips_exactly_and_a_bad_one_is_refused(tmp_path):
    """The committed stores are text (*.json.gz): float32 coordinates and lattices come back bit for bit."""
    from mattergen_kit.presampled import load_store, save_store
    from mattergen_kit.datasets import load_bundled

    batch = load_bundled("test", progress=False)[0]
    for i in range(1, 5):
        batch = type(batch).collate([batch, load_bundled("test", progress=False)[i]])
    job = {"atom_types": batch.atom_types, "frac_coords": batch.frac_coords.float(), "lattice": batch.lattice.float(),
           "num_atoms": batch.num_atoms, "seconds": 1.5, "batch_size": 4, "device": "cpu", "label": "x"}
    store = {"format": STORE_FORMAT, "jobs": {"k": job}}
    save_store(store, tmp_path / "s.json.gz")
    back = load_store(tmp_path / "s.json.gz")["jobs"]["k"]
    for name in ("atom_types", "frac_coords", "lattice", "num_atoms"):
        assert back[name].dtype == job[name].dtype and torch.equal(back[name], job[name])
    assert back["label"] == "x" and back["seconds"] == 1.5
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable store"):
        load_store(tmp_path / "bad.json.gz")


def test_a_store_follows_the_guidance_rule_and_refuses_what_it_cannot_honour(store):
    data, ds = store
    model = PresampledModel(data, "mp_bundled_20_conditioned.npz")
    # conditions without guidance_scale are the γ = 2 request, as for a model
    got = model.generate(24, seed=0, steps=100, conditions={"space_group": 225})
    assert [s.composition.reduced_formula for s in got] == [s.composition.reduced_formula for s in ds.structures]
    with pytest.raises(ValueError, match="cannot honour formula"):
        model.generate(24, seed=0, steps=100, conditions={"space_group": 225}, formula="Li2O")
    with pytest.raises(TypeError, match="unknown sampling option"):
        model.generate(24, seed=0, steps=100, conditions={"space_group": 225}, guidance=2.0)


def test_a_store_that_is_binary_garbage_is_refused_in_one_line(tmp_path):
    """Issue 24's probe: a garbage ``*.pt`` store ended in torch's UnpicklingError traceback."""
    from mattergen_kit.presampled import load_store

    path = tmp_path / "store.pt"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(ValueError, match="is not a readable store of tools/sample_on_device.py"):
        load_store(path)
