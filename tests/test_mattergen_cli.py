"""MatterGen models through the kit's front doors: ``mk.load_model(name | folder)``, ``mattergen-kit generate
--model mattergen:NAME``, ``mattergen-kit fetch-model NAME`` (local HTTP server, no internet)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import mattergen_kit as mk
from mattergen_kit.cli import main
from mattergen_kit.mattergen_models.loader import MatterGenModel

from test_mattergen_loading import hub  # noqa: F401  (the local stand-in of huggingface.co)

FIXTURE = Path(__file__).resolve().parent / "data" / "mattergen_reference"


def test_load_model_takes_names_and_released_folders(monkeypatch):
    monkeypatch.setenv("MATTERGEN_KIT_MODELS", str(FIXTURE))
    assert isinstance(mk.load_model("space_group"), MatterGenModel)
    assert isinstance(mk.load_model("mattergen:dft_band_gap"), MatterGenModel)
    assert isinstance(mk.load_model(FIXTURE / "mattergen_base"), MatterGenModel)
    assert mk.load_mattergen is not None and mk.fetch_model is not None
    assert not isinstance(mk.load_model(), MatterGenModel)          # the bundled model is unchanged


def test_cli_generate_with_a_mattergen_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MATTERGEN_KIT_MODELS", str(FIXTURE))
    out = tmp_path / "out"
    rc = main(["generate", "--model", "mattergen:space_group", "--condition", "space_group=225", "--guidance", "2",
               "--num", "2", "--steps", "2", "--num-atoms", "4", "--out", str(out)])
    assert rc == 0
    table = (out / "summary.csv").read_text().splitlines()   # random weights, 2 steps: cells may be rejected
    assert len(table) == 3 and len(list(out.glob("*.cif"))) == sum(line.split(",")[5] == "True" for line in table[1:])


def test_cli_generate_names_a_missing_mattergen_model_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MATTERGEN_KIT_MODELS", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rc = main(["generate", "--model", "mattergen:dft_mag_density", "--num", "1", "--steps", "2",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "fetch-model dft_mag_density" in err


def test_cli_fetch_model(tmp_path, hub, capsys):  # noqa: F811
    url, served = hub
    rc = main(["fetch-model", "space_group", "--dest", str(tmp_path / "sg"), "--base-url", url])
    assert rc == 0 and (tmp_path / "sg" / "checkpoints" / "last.ckpt").read_bytes() == served.read_bytes()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["fetch-model", "mattergen_base", "--dest", str(tmp_path / "b"), "--base-url",
               f"http://127.0.0.1:{port}", "--timeout", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "by hand" in err
    assert main(["fetch-model", "no_such_model"]) == 2
