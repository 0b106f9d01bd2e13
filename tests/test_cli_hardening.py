"""User mistakes on the command line: one `error:` line on stderr, exit 2, before any long work, nothing written
(issue 11). Most cases call `cli.main` in-process (an uncaught exception would fail the test just as a traceback
would show); the checks that need a real process (signals, slow servers, training) run one."""
import http.server
import subprocess
import sys
import threading
import time

import pytest
import torch

from mattergen_kit import cli
from mattergen_kit.generation import BUNDLED_CHECKPOINT
from mattergen_kit.model.checkpoint import load_checkpoint, save_checkpoint


def one_error_line(capsys, code, expected):
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]


GENERATE_MISTAKES = {
    "steps_zero": (["--steps", "0"], "--steps must be at least 2, got 0"),
    "steps_one": (["--steps", "1"], "--steps must be at least 2, got 1"),
    "num_zero": (["--num", "0"], "--num must be at least 1"),
    "num_negative": (["--num", "-4"], "--num must be at least 1"),
    "batch_zero": (["--batch-size", "0"], "--batch-size must be at least 1"),
    "threads_negative": (["--threads", "-1"], "--threads must be at least 1, got -1"),
    "threads_zero": (["--threads", "0"], "--threads must be at least 1, got 0"),
    "seed_huge": (["--seed", str(10**23)], "--seed must be between 0 and 2**63 - 1"),
    "seed_negative": (["--seed", "-1"], "--seed must be between 0 and 2**63 - 1"),
    "device_cuda": (["--device", "cuda"], "CUDA is not available"),
    "device_unknown": (["--device", "tpu"], "is not a device name"),
    "device_mps": (["--device", "mps"], "only cpu and cuda are supported"),
    "elements_noble": (["--elements", "He,Ne"], "none of the allowed elements (He, Ne) can be generated"),
    "elements_tc": (["--elements", "Tc"], "none of the allowed elements (Tc)"),
    "elements_empty": (["--elements", ","], "allowed_elements is empty"),
    "elements_unknown": (["--elements", "Li,Qq"], "'Qq' is not an element"),
    "model_missing": (["--model", "no/such/model.pt"], "no such checkpoint file"),
    "overwrite_and_resume": (["--overwrite", "--resume"], "either overwrite"),
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("case", sorted(GENERATE_MISTAKES))
def test_generate_mistakes_are_one_line_errors_before_loading(tmp_path, capsys, case):
    args, expected = GENERATE_MISTAKES[case]
    out = tmp_path / "out"
    start = time.perf_counter()
    code = cli.main(["generate", "--out", str(out), *args])
    one_error_line(capsys, code, expected)
    assert time.perf_counter() - start < 10
    assert not out.exists()


def test_generate_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    a_file = tmp_path / "f.txt"
    a_file.write_text("keep me")
    one_error_line(capsys, cli.main(["generate", "--out", str(a_file)]), "is a file, not a folder")
    one_error_line(capsys, cli.main(["generate", "--out", str(a_file / "sub")]), "is a file")
    assert a_file.read_text() == "keep me"


def test_generate_resume_in_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    one_error_line(capsys, cli.main(["generate", "--out", str(tmp_path), "--resume"]), "has no manifest.json")


@pytest.mark.parametrize("bad", ["nan", "negative", "zeros"])
def test_a_checkpoint_with_a_broken_prior_is_a_clear_error(tmp_path, capsys, bad):
    ckpt = load_checkpoint(BUNDLED_CHECKPOINT)
    probs = list(ckpt["meta"]["num_atoms_histogram"])
    probs = {"nan": [float("nan")] * len(probs), "negative": [-p for p in probs], "zeros": [0.0] * len(probs)}[bad]
    path = save_checkpoint(tmp_path / "bad.pt", ckpt["model_config"], ckpt["state_dict"], ckpt["diffusion_config"],
                           {**ckpt["meta"], "num_atoms_histogram": probs})
    code = cli.main(["generate", "--out", str(tmp_path / "o"), "--model", str(path), "--steps", "2"])
    one_error_line(capsys, code, "invalid number-of-atoms prior")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ train
@pytest.mark.parametrize("override,expected", [
    ("lr=-0.001", "lr must be > 0"),
    ("lr=0", "lr must be > 0"),
    ("init_from=no/such.pt", "init_from: no/such.pt does not exist"),
])
def test_train_config_mistakes_are_one_line_errors(tmp_path, capsys, override, expected):
    code = cli.main(["train", "--config", "configs/tiny_test.yaml", "--run-dir", str(tmp_path / "run"),
                     "--set", override])
    one_error_line(capsys, code, expected)


def test_train_missing_dataset_path(tmp_path, capsys):
    code = cli.main(["train", "--config", "configs/tiny_test.yaml", "--run-dir", str(tmp_path / "run"),
                     "--set", "dataset=csv", "--set", f"data_path={tmp_path / 'nope.csv'}"])
    one_error_line(capsys, code, "data_path:")


def test_train_with_a_truncated_last_ckpt(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(BUNDLED_CHECKPOINT.read_bytes()[:3000])
    r = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "train", "--config", "configs/tiny_test.yaml",
                        "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "last.ckpt" in r.stderr and "truncated" in r.stderr


# ------------------------------------------------------------------------------------------ fetch-data
class Drip(http.server.BaseHTTPRequestHandler):
    """Answers 200 with a big Content-Length, then sends one byte every 0.3 s (never finishes)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            while not self.server.stopping.is_set():
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_fetch_data_gives_up_at_its_deadline_on_a_dripping_server(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    server.stopping = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "fetch-data", "mp20", "--root", str(tmp_path),
                            "--base-url", f"http://127.0.0.1:{server.server_port}/", "--timeout", "2"],
                           capture_output=True, text=True, timeout=60)
        seconds = time.perf_counter() - start
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
    assert r.returncode == 2 and "did not finish in time" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert seconds < 60  # a 2 s deadline plus interpreter start-up on a busy machine; before the fix: never
    assert not list(tmp_path.iterdir()) or not list(tmp_path.rglob("*.csv*"))  # nothing half-written kept


@pytest.mark.parametrize("value", ["0", "-5"])
def test_fetch_data_timeout_must_be_positive(tmp_path, capsys, value):
    code = cli.main(["fetch-data", "mp20", "--root", str(tmp_path), "--timeout", value])
    one_error_line(capsys, code, "--timeout must be > 0")


@pytest.mark.parametrize("args", [["--num", "abc"], ["--steps", "1.5"], ["--frobnicate"]])
def test_generate_argument_type_mistakes_exit_2_without_a_traceback(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as info:  # argparse: usage line + one error line, exit 2
        cli.main(["generate", "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "error:" in err.splitlines()[-1] and "Traceback" not in err


def test_evaluate_on_an_empty_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "evaluate", str(tmp_path / "empty"), "--out",
                        str(tmp_path / "rep"), "--no-relax"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no structure files" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_fetch_data_404_is_a_clear_error(tmp_path):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "fetch-data", "mp20", "--root", str(tmp_path),
                            "--base-url", f"http://127.0.0.1:{server.server_port}/"],
                           capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 2 and "404" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_a_rejected_materials_project_key_says_so(monkeypatch):
    """mp-api shows a 401 as "KeyError: 'version'"; the message names the rejected key instead."""
    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"detail": "Unauthorized"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    from mattergen_kit import datasets

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(datasets.MPAccessError, match=r"rejected the API key \(HTTP 401/403\)"):
            datasets.load_materials_project(elements=["Li", "O"], api_key="k" * 32, cache=False, timeout=10,
                                            endpoint=f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ issue 24: the probe's CLI cases
FINETUNE_MISTAKES = {  # name: (arguments after --table TABLE --property my_scalar, message)
    "table a folder": (["--table", "FOLDER"], "is a folder; give a CDVAE-format CSV file"),
    "max-steps -5": (["--max-steps", "-5"], "max_steps must be -1 (no step limit) or a whole number ≥ 1, got -5"),
    "max-steps 0": (["--max-steps", "0"], "max_steps must be -1 (no step limit) or a whole number ≥ 1, got 0"),
    "max-time -1": (["--max-time", "-1"], "max_time_minutes must be a finite number of minutes > 0"),
    "max-time nan": (["--max-time", "nan"], "max_time_minutes must be a finite number of minutes > 0"),
    "batch-size 0": (["--batch-size", "0"], "batch_size must be a whole number ≥ 1, got 0"),
    "out a file": (["--out", "FILE"], "is a file, not a folder"),
    "base a folder": (["--base", "FOLDER"], "is a folder; give a checkpoint file"),
}


@pytest.mark.parametrize("case", sorted(FINETUNE_MISTAKES))
def test_finetune_limits_and_paths_are_one_line_errors_before_training(tmp_path, capsys, case):
    """`max_steps=-5` ended in Lightning's traceback, 0 or a negative time in "no checkpoint at model.pt", a folder
    as the table and a file as --out in OS tracebacks; now one line before the table or the base is read."""
    extra, expected = FINETUNE_MISTAKES[case]
    table = tmp_path / "t.csv"
    table.write_text("cif,my_scalar\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    subst = {"FOLDER": str(tmp_path / "folder"), "FILE": str(tmp_path / "file")}
    extra = [subst.get(a, a) for a in extra]
    argv = ["finetune", "--table", str(table), "--property", "my_scalar", "--out", str(tmp_path / "run"),
            "--no-progress"]
    code = cli.main(argv + extra)  # a later --table / --out wins in argparse
    one_error_line(capsys, code, expected)
    assert not (tmp_path / "run").exists()


def test_num_atoms_above_the_limit_names_the_limit(tmp_path, capsys):
    code = cli.main(["generate", "--out", str(tmp_path / "o"), "--num-atoms", "1001"])
    one_error_line(capsys, code, "--num-atoms must be between 1 and 200, got 1001")


def test_an_empty_dask_address_is_refused_not_a_local_run(tmp_path, capsys):
    code = cli.main(["generate", "--out", str(tmp_path / "o"), "--dask-scheduler", ""])
    one_error_line(capsys, code, "--dask-scheduler needs an address")
    assert not (tmp_path / "o").exists()


def test_no_command_and_stray_info_arguments(capsys):
    assert cli.main([]) == 2
    assert "error: give a command: generate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        cli.main(["info", "--bogus"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("value", [1e9, "1e9"])
def test_a_band_gap_of_1e9_says_what_was_asked(tmp_path, capsys, value):
    """Issue 24's misleading message: the request is refused naming the target and the trainable range, and never
    blames an "untrained or diverged" model."""
    code = cli.main(["generate", "--out", str(tmp_path / "o"), "--num", "2", "--steps", "3",
                     "--condition", f"band_gap={value}"])
    err = capsys.readouterr().err
    assert code == 2 and "untrained or diverged" not in err
    assert "band_gap = 1e+09 eV is far outside the labels this model was trained on" in err, err


def test_num_atoms_200_says_the_cells_are_beyond_the_training(tmp_path, capsys):
    """The other misleading message of issue 24: cells larger than the prior get a warning before sampling (and a
    non-finite sample names the request: test_sampling_request.py), never the checkpoint."""
    code = cli.main(["generate", "--out", str(tmp_path / "o"), "--num", "1", "--steps", "2", "--seed", "0",
                     "--no-picture", "--num-atoms", "200"])
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert "untrained or diverged" not in text
    assert "cells of 200 atoms are asked for, but this model was trained on cells of at most" in captured.err
    assert code == 0 or "beyond what the model was trained on" in captured.err
