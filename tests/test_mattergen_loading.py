"""Safe loading, resolving and fetching of MatterGen's released checkpoints (mattergen_kit/mattergen_models/files.py).

Real bytes only: the random-weight checkpoints of tests/data/mattergen_reference/ (written by MatterGen's own
code in the released layout), planted pickle payloads, and a local HTTP server on 127.0.0.1 standing in for
Hugging Face (with HTTP Range support, to test resuming).
"""

from __future__ import annotations

import http.server
import os
import pathlib
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from mattergen_kit.mattergen_models import files as mm
from mattergen_kit.model.mattergen import build_denoiser, denoiser_state_dict

FIXTURE = Path(__file__).resolve().parent / "data" / "mattergen_reference"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def test_released_layout_checkpoint_loads_with_weights_only():
    ckpt = mm.load_lightning_checkpoint(FIXTURE / "space_group" / "checkpoints" / "last.ckpt")
    assert ckpt["pytorch-lightning_version"] == "2.0.6" and ckpt["optimizer_states"]
    model = build_denoiser(FIXTURE / "space_group" / "config.yaml")
    model.load_state_dict(denoiser_state_dict(ckpt["state_dict"]), strict=True)


@pytest.mark.parametrize("payload, name", [(_Payload, "system"), (_EvalPayload, "eval")])
def test_planted_code_payload_is_refused_and_never_runs(tmp_path, payload, name):
    marker = tmp_path / "pwned"
    state = torch.load(FIXTURE / "mattergen_base" / "checkpoints" / "last.ckpt", weights_only=True)
    state["callbacks"] = {"evil": payload(marker)}
    path = tmp_path / "last.ckpt"
    torch.save(state, path)
    with pytest.raises(mm.UnsafeCheckpointError, match=name):
        mm.load_lightning_checkpoint(path)
    assert not marker.exists(), "the payload ran"


def test_legacy_plain_pickle_with_payload_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "last.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}))
    with pytest.raises(mm.UnsafeCheckpointError):
        mm.load_lightning_checkpoint(path)
    assert not marker.exists()


def test_data_holding_globals_become_inert_placeholders(tmp_path):
    state = torch.load(FIXTURE / "mattergen_base" / "checkpoints" / "last.ckpt", weights_only=True)
    state["callbacks"] = {"dirpath": pathlib.PosixPath("/some/run/checkpoints")}
    path = tmp_path / "last.ckpt"
    torch.save(state, path)
    ckpt = mm.load_lightning_checkpoint(path)
    placeholder = ckpt["callbacks"]["dirpath"]
    assert type(placeholder).__name__ == "PosixPath" and isinstance(placeholder, mm._Inert)
    assert len(ckpt["state_dict"]) == len(state["state_dict"])


def test_fingerprint_is_checked_before_reading(tmp_path):
    path = tmp_path / "last.ckpt"
    shutil.copy(FIXTURE / "mattergen_base" / "checkpoints" / "last.ckpt", path)
    size, sha = path.stat().st_size, mm.sha256_of(path)
    mm.load_lightning_checkpoint(path, fingerprint=(size, sha))
    with pytest.raises(mm.FingerprintError, match="bytes"):
        mm.load_lightning_checkpoint(path, fingerprint=(size + 1, sha))
    with pytest.raises(mm.FingerprintError, match="sha256"):
        mm.load_lightning_checkpoint(path, fingerprint=(size, "0" * 64))


def test_names_resolve_in_the_shared_folder_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(mm.MODELS_ENV, str(FIXTURE))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loc = mm.resolve_model("space_group")
    assert loc.folder == FIXTURE / "space_group" and loc.fingerprint == mm.KNOWN_CHECKPOINTS["space_group"]
    assert mm.resolve_model("mattergen:dft_band_gap").folder == FIXTURE / "dft_band_gap"
    assert mm.resolve_model(FIXTURE / "chemical_system").name == "chemical_system"
    # HF snapshot layout (<root>/checkpoints/<name>) in the cache
    cached = tmp_path / "cache" / "mattergen_kit" / "mattergen" / "checkpoints" / "mp_20_base"
    shutil.copytree(FIXTURE / "mattergen_base", cached)
    monkeypatch.setenv(mm.MODELS_ENV, "")
    assert mm.resolve_model("mp_20_base").folder == cached
    with pytest.raises(FileNotFoundError, match="fetch-model dft_mag_density"):
        mm.resolve_model("dft_mag_density")
    with pytest.raises(FileNotFoundError, match="released models are"):
        mm.resolve_model("no_such_model")


# ------------------------------------------------------------------------------------------------ fetching
class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (what Hugging Face's CDN does); counts the bytes sent."""

    sent = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        type(self).sent += len(data) - start          # counted before sending: the client may return at once
        self.wfile.write(data[start:])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local stand-in of huggingface.co/microsoft/mattergen/resolve/main serving the fixture's space_group
    model under the released name, with its real size and sha256 registered as the published fingerprint."""
    root = tmp_path / "hub"
    shutil.copytree(FIXTURE / "space_group", root / "checkpoints" / "space_group")
    ckpt = root / "checkpoints" / "space_group" / "checkpoints" / "last.ckpt"
    monkeypatch.setitem(mm.KNOWN_CHECKPOINTS, "space_group", (ckpt.stat().st_size, mm.sha256_of(ckpt)))
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.sent = 0
    yield f"http://127.0.0.1:{server.server_address[1]}", ckpt
    server.shutdown()


def test_fetch_model_downloads_verifies_and_resumes(tmp_path, hub):
    url, served = hub
    dest = tmp_path / "models" / "space_group"
    folder = mm.fetch_model("space_group", dest=dest, base_url=url, progress=False)
    assert (folder / "config.yaml").read_bytes() == (served.parent.parent / "config.yaml").read_bytes()
    assert (folder / "checkpoints" / "last.ckpt").read_bytes() == served.read_bytes()
    mm.load_lightning_checkpoint(folder / "checkpoints" / "last.ckpt", mm.KNOWN_CHECKPOINTS["space_group"])

    # an interrupted download: the first 100 kB are on disk; only the rest is fetched
    (folder / "checkpoints" / "last.ckpt").unlink()
    part = folder / "checkpoints" / "last.ckpt.part"
    part.write_bytes(served.read_bytes()[:100_000])
    _RangeHandler.sent = 0
    mm.fetch_model("space_group", dest=dest, base_url=url, progress=False)
    assert _RangeHandler.sent == served.stat().st_size - 100_000
    assert (folder / "checkpoints" / "last.ckpt").read_bytes() == served.read_bytes()


def test_fetch_model_refuses_a_file_with_the_wrong_fingerprint(tmp_path, hub, monkeypatch):
    url, served = hub
    monkeypatch.setitem(mm.KNOWN_CHECKPOINTS, "space_group", (served.stat().st_size, "0" * 64))
    with pytest.raises(mm.ModelFetchError, match="sha256"):
        mm.fetch_model("space_group", dest=tmp_path / "m", base_url=url, progress=False)
    assert not (tmp_path / "m" / "checkpoints" / "last.ckpt").exists()


def test_fetch_model_offline_fails_fast_with_one_line_naming_the_manual_way(tmp_path):
    with socket.socket() as s:                      # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(mm.ModelFetchError) as err:
        mm.fetch_model("mattergen_base", dest=tmp_path / "m", base_url=f"http://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "\n" not in message and "by hand" in message and "huggingface.co/microsoft/mattergen" in message


def test_fetch_model_times_out_on_a_silent_server(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)                                 # accepts the connection, never answers
    try:
        start = time.monotonic()
        with pytest.raises(mm.ModelFetchError, match="by hand"):
            mm.fetch_model("mattergen_base", dest=tmp_path / "m",
                           base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        assert time.monotonic() - start < 5
    finally:
        silent.close()


@pytest.mark.parametrize("timeout", [-1, 0, float("nan"), float("inf"), "10"])
def test_fetch_model_refuses_a_timeout_it_cannot_keep(tmp_path, timeout):
    """Issue 24's probe: a negative or NaN timeout went to the socket (here it only failed because there is no
    network); now refused before any connection."""
    from mattergen_kit.mattergen_models import fetch_model

    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        fetch_model("mattergen_base", dest=tmp_path / "m", timeout=timeout)
    assert not (tmp_path / "m").exists()


def test_fetch_model_into_a_file_is_refused(tmp_path):
    from mattergen_kit.mattergen_models import fetch_model

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        fetch_model("mattergen_base", dest=tmp_path / "f", base_url="http://127.0.0.1:9", timeout=2)
