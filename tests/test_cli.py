"""The `mattergen-kit` entry point: help, unknown commands, info, and clear errors instead of tracebacks."""
import subprocess
import sys


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "mattergen_kit.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for command in ("generate", "train", "evaluate", "fetch-data"):
        assert f"mattergen-kit {command}" in out.stdout


def test_unknown_command_is_a_clear_error():
    out = run("frobnicate")
    assert out.returncode == 2 and "unknown command 'frobnicate'" in out.stderr


def test_info_reports_the_bundled_model_and_data_root():
    out = run("info")
    assert out.returncode == 0
    assert "bundled model:" in out.stdout and "(present)" in out.stdout and "data root:" in out.stdout


def test_fetch_data_reports_an_unreachable_mirror_without_a_traceback(tmp_path):
    out = run("fetch-data", "mp20", "--root", str(tmp_path), "--base-url", "http://127.0.0.1:9/")
    assert out.returncode == 2
    assert "error:" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.glob("*.csv"))  # nothing half-written


def test_train_reports_a_missing_config():
    out = run("train", "--config", "no/such/config.yaml")
    assert out.returncode == 2 and "error:" in out.stderr
