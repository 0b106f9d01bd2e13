"""Generation output is never lost or mixed: refused non-empty folders, batch-by-batch atomic writes with a
manifest, --resume after a killed run gives identical files, MatterGen's extxyz/zip names (issue 11)."""
import json
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from ase.io import read

import mattergen_kit as mk
from mattergen_kit.sampling.request import SamplingRequest
from mattergen_kit.outputs import (MANIFEST, OutputError, RunManifest, generate_to_folder, prepare_out_dir, run_settings,
                                   write_batch, write_samples)

STEPS = 3
CLI = [sys.executable, "-m", "mattergen_kit.cli", "generate"]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return mk.load_model()


def run(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def folder_bytes(out):
    """Every file of a run folder (manifest excluded: it records the resumed batches) -> bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, "grid.png")}


def test_run_folder_holds_cifs_mattergen_files_and_manifest(model, tmp_path):
    out = tmp_path / "run"
    written = generate_to_folder(model, out, 5, seed=3, steps=STEPS, batch_size=2, picture=False, progress=False)
    names = [f"crystal_{i:04d}.cif" for i in range(5)]
    assert sorted(p.name for p in out.glob("*.cif")) == names
    frames = read(out / "generated_crystals.extxyz", index=":")
    structures = model.generate(5, seed=3, steps=STEPS, batch_size=2, progress=False)
    assert [f.get_chemical_formula() for f in frames] == [s.to_ase_atoms().get_chemical_formula() for s in structures]
    assert [f.info["file"] for f in frames] == names
    with zipfile.ZipFile(out / "generated_crystals_cif.zip") as zf:
        assert zf.namelist() == names
        assert zf.read(names[1]) == (out / names[1]).read_bytes()
    manifest = RunManifest.load(out)
    assert manifest.complete and manifest.settings["seed"] == 3 and manifest.settings["steps"] == STEPS
    assert sorted(manifest.batches) == ["0", "2", "4"] and manifest.batches["4"] == [names[4]]
    assert written["seed"] == 3
    assert not list(out.rglob("*.tmp*"))  # no temporary files left


def test_resume_continues_without_redoing_and_matches_an_uninterrupted_run(model, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    generate_to_folder(model, full, 5, seed=9, steps=STEPS, batch_size=2, picture=False, progress=False)
    batches = model.iter_batches(5, seed=9, steps=STEPS, batch_size=2, progress=False)
    manifest = RunManifest(settings=run_settings(model, SamplingRequest(5, seed=9, steps=STEPS, batch_size=2,
                                                                        progress=False), prefix="crystal"))
    prepare_out_dir(part)
    start, batch, _ = next(batches)  # the first batch finished, then the run "died"
    write_batch(part, manifest, start, batch, ["crystal_0000.cif", "crystal_0001.cif"])
    done = []
    written = generate_to_folder(model, part, 5, seed=9, steps=STEPS, batch_size=2, resume=True, picture=False,
                                 progress=False, on_batch=lambda a, b, n: done.append(a))
    assert done == [2, 4] and written["resumed_batches"] == [0]
    assert folder_bytes(part) == folder_bytes(full)


def test_resume_with_other_settings_is_refused(model, tmp_path):
    out = tmp_path / "run"
    generate_to_folder(model, out, 2, seed=1, steps=STEPS, picture=False, progress=False)
    with pytest.raises(OutputError, match=r"settings differ.*steps: 3 then, 4 now"):
        generate_to_folder(model, out, 2, seed=1, steps=4, resume=True, picture=False, progress=False)


def test_write_samples_replaces_its_own_earlier_output_and_refuses_foreign_files(real_structures, tmp_path):
    out = tmp_path / "samples"
    write_samples(real_structures[:4], out, picture=False)
    write_samples(real_structures[4:6], out, picture=False)  # a rerun: replaced as a whole, never mixed
    assert sorted(p.name for p in out.glob("*.cif")) == ["crystal_0000.cif", "crystal_0001.cif"]
    assert len((out / "summary.csv").read_text().splitlines()) == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_samples(real_structures[:1], out, picture=False)
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------ CLI
def test_cli_refuses_a_non_empty_out_and_overwrite_clears_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "crystal_0003.cif").write_text("stale")
    r = run("--num", 2, "--steps", STEPS, "--out", out, "--seed", 0, "--no-picture")
    assert r.returncode == 2 and "not empty" in r.stderr and "--overwrite" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (out / "crystal_0003.cif").read_text() == "stale"
    r = run("--num", 2, "--steps", STEPS, "--out", out, "--seed", 0, "--no-picture", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.cif")) == ["crystal_0000.cif", "crystal_0001.cif"]


def _wait_for_batches(out, proc, n, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / MANIFEST).is_file() and len(json.loads((out / MANIFEST).read_text())["batches"]) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no batch finished in time")


KILL_ARGS = ["--num", 4, "--batch-size", 1, "--steps", 30, "--seed", 5, "--no-picture"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The files of the same run, never interrupted (shared by the kill tests)."""
    full = tmp_path_factory.mktemp("full") / "out"
    assert run(*KILL_ARGS, "--out", full).returncode == 0
    return folder_bytes(full)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_cli_killed_run_resumes_to_the_same_files(tmp_path, sig, uninterrupted):
    """Kill a real `mattergen-kit generate` after its first batch; --resume finishes it identically."""
    args = KILL_ARGS
    out = tmp_path / "killed"
    # SIGINT must reach Python's handler even when this test runs in a background job (which ignores SIGINT)
    proc = subprocess.Popen([*CLI, *map(str, args), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_batches(out, proc, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    kept = RunManifest.load(out)
    assert 1 <= len(kept.batches) < 4 and not kept.complete, "the run ended before it could be interrupted"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err
        assert f"interrupted: kept {len(kept.batches)} finished crystal(s) of 4" in err and "--resume" in err
    for name in sum(kept.batches.values(), []):
        assert (out / name).read_text().startswith("# generated using pymatgen")  # whole files only
    r = run(*args, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr
    assert folder_bytes(out) == uninterrupted


def test_a_lost_batch_file_is_recomputed_on_resume(model, tmp_path):
    full, damaged = tmp_path / "full", tmp_path / "damaged"
    generate_to_folder(model, full, 4, seed=2, steps=STEPS, batch_size=2, picture=False, progress=False)
    generate_to_folder(model, damaged, 4, seed=2, steps=STEPS, batch_size=2, picture=False, progress=False)
    (damaged / ".batches" / "batch_000002.npz").unlink()
    done = []
    generate_to_folder(model, damaged, 4, seed=2, steps=STEPS, batch_size=2, resume=True, picture=False,
                       progress=False, on_batch=lambda a, b, n: done.append(a))
    assert done == [2] and folder_bytes(damaged) == folder_bytes(full)


def test_resume_of_a_finished_run_samples_nothing(model, tmp_path):
    out = tmp_path / "run"
    generate_to_folder(model, out, 2, seed=2, steps=STEPS, picture=False, progress=False)
    done = []
    written = generate_to_folder(model, out, 2, seed=2, steps=STEPS, resume=True, picture=False, progress=False,
                                 on_batch=lambda a, b, n: done.append(a))
    assert done == [] and written["resumed_batches"] == [0]


@pytest.mark.parametrize("damage,match", [("truncated", "not a readable run manifest"),
                                          ("foreign", "not a mattergen_kit run manifest"),
                                          ("future", "manifest version 99")])
def test_a_damaged_manifest_is_a_clear_error_on_resume(model, tmp_path, damage, match):
    out = tmp_path / "run"
    generate_to_folder(model, out, 2, seed=2, steps=STEPS, picture=False, progress=False)
    text = (out / MANIFEST).read_text()
    (out / MANIFEST).write_text({"truncated": text[: len(text) // 2], "foreign": '{"hello": 1}',
                                 "future": text.replace('"version": 1', '"version": 99')}[damage])
    with pytest.raises(OutputError, match=match):
        generate_to_folder(model, out, 2, seed=2, steps=STEPS, resume=True, picture=False, progress=False)


def test_cli_resume_with_another_num_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run("--num", 2, "--steps", STEPS, "--out", out, "--seed", 0, "--no-picture").returncode == 0
    r = run("--num", 3, "--steps", STEPS, "--out", out, "--seed", 0, "--no-picture", "--resume")
    assert r.returncode == 2 and "settings differ" in r.stderr and "num: 2 then, 3 now" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_grid_titles_each_crystal_with_its_file_number(tmp_path, real_structures, monkeypatch):
    """A rejected crystal is left out of the picture; the others keep the numbers of their CIF files, so the grid's
    "25: TaAl2Se9" is crystal_0025.cif (not the 25th picture)."""
    import mattergen_kit.render as render
    from mattergen_kit.outputs import write_collection

    structures = list(real_structures[:3])
    names = [f"crystal_{i:04d}.cif" for i in range(3)]
    for n, s in zip(names[::2], structures[::2]):
        s.to(filename=str(tmp_path / n))
    seen = {}
    monkeypatch.setattr(render, "structure_grid", lambda shown, titles, path: seen.update(titles=titles)
                        or path.write_bytes(b"png"))
    written = write_collection(tmp_path, structures, names, rejected={"crystal_0001.cif": "atoms too close"})
    assert seen["titles"] == [f"0: {structures[0].composition.reduced_formula}",
                              f"2: {structures[2].composition.reduced_formula}"]
    assert written["picture"].name == "grid.png" and list(written["rejected"]) == ["crystal_0001.cif"]
