"""Issue 24 (hostile inputs, round 3): no lost runs, no hangs, no silent wrong results on the new surface."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mattergen_kit import cli
from mattergen_kit.outputs import LOCK, OutputError, RunLock, RunManifest, generate_to_folder, write_samples

REPO = Path(__file__).resolve().parent.parent


def one_error_line(capsys, code, *expected):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def bundled_model():
    from mattergen_kit.generation import load_model

    return load_model()


# ------------------------------------------------------------------------------------------ lost output: one run per folder
def test_a_held_run_lock_refuses_generate_write_samples_and_the_cluster_route(tmp_path, bundled_model,
                                                                              real_structures):
    from mattergen_kit.cluster import generate_on_cluster

    out = tmp_path / "run"
    with RunLock(out):
        with pytest.raises(OutputError, match=rf"in use by another run \(pid {os.getpid()} on "):
            generate_to_folder(bundled_model, out, 2, steps=2, seed=0)
        with pytest.raises(OutputError, match=rf"in use by another run \(pid {os.getpid()} on "):
            write_samples(real_structures[:2], out, picture=False)
        with pytest.raises(OutputError, match=rf"in use by another run \(pid {os.getpid()} on "):
            generate_on_cluster("tcp://127.0.0.1:9", out, 2, steps=2, seed=0)  # refused before any connection
        assert [p.name for p in out.iterdir()] == [LOCK]        # nothing written while it was held
    assert not (out / LOCK).exists()                            # a finished holder removes its lock file
    written = generate_to_folder(bundled_model, out, 2, steps=2, seed=0, picture=False)  # released: the run goes
    assert RunManifest.load(out).complete and [p.name for p in written["cifs"]] == ["crystal_0000.cif",
                                                                                 "crystal_0001.cif"]


HOLDER = textwrap.dedent("""
    import sys, time
    from mattergen_kit.outputs import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_generate_into_a_folder_another_process_is_writing_names_it_and_a_killed_holder_frees_it(tmp_path,
                                                                                                  capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = cli.main(["generate", "--out", str(out), "--num", "2", "--steps", "2", "--seed", "1", "--no-picture"])
        one_error_line(capsys, code, f"in use by another run (pid {holder.pid} on ", "another --out")
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL: the kernel released the lock; the stale .lock file does not block (and is not "content")
    code = cli.main(["generate", "--out", str(out), "--num", "2", "--steps", "2", "--seed", "1", "--no-picture"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.cif")) == ["crystal_0000.cif", "crystal_0001.cif"]


@pytest.mark.timeout(240)
def test_two_generate_processes_started_together_into_one_folder(tmp_path):
    """The issue's case: both used to exit 0 and only the last one's crystals survived. Now exactly one runs; the
    other is refused (in use, or not empty if the first already finished) and the folder is the winner's."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "mattergen_kit.cli", "generate", "--out", str(out), "--num", "8",
                               "--steps", "30", "--seed", str(seed), "--no-picture"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (11, 12)]
    results = [(p.wait(timeout=200), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    winner = [seed for seed, r in zip((11, 12), results) if r[0] == 0][0]
    loser_err = [r[2] for r in results if r[0] == 2][0]
    assert "Traceback" not in loser_err and ("in use by another run (pid" in loser_err or "not empty" in loser_err)
    manifest = RunManifest.load(out)
    assert manifest.complete and manifest.settings["seed"] == winner and len(list(out.glob("*.cif"))) == 8
