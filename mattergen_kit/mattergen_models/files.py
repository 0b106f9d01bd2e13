"""MatterGen's nine released checkpoints: where they are, how they are fetched, how they are read safely.

Layout of one model (as released, and as ``huggingface_hub.snapshot_download("microsoft/mattergen")`` writes it
under ``checkpoints/<name>/``)::

    <name>/config.yaml                 the Hydra training config (read with yaml.safe_load)
    <name>/checkpoints/last.ckpt       a PyTorch Lightning checkpoint (a pickle)

Names resolve in this order: a folder path holding ``config.yaml``; ``$MATTERGEN_KIT_MODELS`` (one or more
folders separated by ``os.pathsep``, each holding ``<name>/`` or ``checkpoints/<name>/``, e.g. a shared copy);
the kit's cache ``~/.cache/mattergen_kit/mattergen/<name>`` (where :func:`fetch_model` downloads).

Safety: a Lightning checkpoint pickles more than tensors (loop and callback state, optimizer state,
hyper-parameter containers). It is only ever read with ``torch.load(weights_only=True)``: the globals it names
are listed first without executing anything (``torch.serialization.get_unsafe_globals_in_checkpoint``); the
harmless containers Lightning/OmegaConf/pathlib put there are mapped onto an inert placeholder (it stores
what it is given and runs nothing); any other global (``os.system``, ``builtins.eval``, …) is refused by name
before unpickling. A file whose name has a published fingerprint (``KNOWN_CHECKPOINTS``, from the Git-LFS
pointers of the release) is checked for size and sha256 before it is opened.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

HF_REPO = "microsoft/mattergen"
HF_BASE_URL = f"https://huggingface.co/{HF_REPO}/resolve/main"
MODELS_ENV = "MATTERGEN_KIT_MODELS"
CHECKPOINT_FILE = Path("checkpoints") / "last.ckpt"
CONNECT_TIMEOUT_S = 10.0

# size (bytes) and sha256 of each released last.ckpt (../shared/data/mattergen_release/checkpoints.md)
KNOWN_CHECKPOINTS = {
    "mattergen_base": (461370350, "81668ee12afc1ee1b037f362420730de3460bfd2d36e547585fdcb911a3dfdef"),
    "mp_20_base": (461369442, "ffb80e4425a6f99f479a67b8cd111885d45117234e8947ff77eb3a55df420b9a"),
    "chemical_system": (512404276, "4ad21d977c2b776a31c92498c4d1c88d3e1e286deeb941e997af8e082310b80e"),
    "space_group": (513189244, "1b6ab06739f4319d75f4a19960840ec3c8d3d32ee842c996876ef9d8b188e4bb"),
    "dft_band_gap": (511777150, "864ebbfd360e0a8287287d290a552da6b6bd92d67418a6a40be419ed3acd5e7e"),
    "dft_mag_density": (511777278, "01dd3e86805165412e0810e2a77a4756f8e1020f3ff2707c74af0a3f88a1bb8e"),
    "ml_bulk_modulus": (511777406, "67f7f5e28695776ed285a293b30160f8b546063cbac4a763a36f6ca3f6242db6"),
    "chemical_system_energy_above_hull": (562814862,
                                          "50d4a51b109b178db98de82849d0ad14397b663526b2387caee3a643f27e326a"),
    "dft_mag_density_hhi_score": (562187480, "98a4f2f9263b013d7d94a04c08e6928f90933d5f02c75f9b58c12609dddef016"),
}

# globals a Lightning 2.x checkpoint may name besides tensors and plain containers: data holders, never code
INERT_GLOBALS = (
    "lightning_fabric.utilities.data.AttributeDict", "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict", "pytorch_lightning.core.saving.AttributeDict",
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode", "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode", "typing.Any", "pathlib.PosixPath", "pathlib.Path",
    "pathlib.WindowsPath", "collections.defaultdict", "numpy.dtype", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar", "numpy.dtypes.Float64DType", "numpy.dtypes.Float32DType",
    "numpy.dtypes.Int64DType",
)


class UnsafeCheckpointError(ValueError):
    """The checkpoint names a global that could run code; it was not unpickled."""


class FingerprintError(ValueError):
    """A file's size or sha256 is not the published one."""


class ModelFetchError(RuntimeError):
    """A released model could not be downloaded (one line, naming the manual alternative)."""


class _Inert(dict):
    """Placeholder for a data-holding global of a checkpoint: keeps its arguments/state, executes nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _inert_class(qualified_name: str) -> type:
    return type(qualified_name.rsplit(".", 1)[-1], (_Inert,), {"qualified_name": qualified_name})


# ------------------------------------------------------------------------------------------------ fingerprints
def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_fingerprint(path: Path, size: int, sha256: str) -> None:
    """FingerprintError unless ``path`` has exactly ``size`` bytes and this sha256 (size checked first: cheap)."""
    actual = Path(path).stat().st_size
    if actual != size:
        raise FingerprintError(f"{path}: {actual} bytes, the published file has {size}; it is incomplete or "
                               "another file — delete it and download it again")
    digest = sha256_of(Path(path))
    if digest != sha256:
        raise FingerprintError(f"{path}: sha256 {digest} is not the published {sha256}; it is corrupted or "
                               "another file — delete it and download it again")


# ------------------------------------------------------------------------------------------------ safe loading
def load_lightning_checkpoint(path: str | Path, fingerprint: tuple[int, str] | None = None) -> dict:
    """A Lightning checkpoint as a dict, read with ``weights_only=True`` (see the module docstring).

    ``fingerprint`` = (size, sha256) is checked before anything is read. Raises :class:`UnsafeCheckpointError`
    naming the globals that could run code (nothing is executed), :class:`FingerprintError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if fingerprint is not None:
        verify_fingerprint(path, *fingerprint)
    try:
        named = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:                     # not a torch zip file at all
        raise UnsafeCheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc})") from None
    unsafe = [g for g in named if g not in INERT_GLOBALS]
    if unsafe:
        raise UnsafeCheckpointError(f"{path} names globals that could run code when unpickled: {', '.join(unsafe)}; "
                                    "refused without unpickling it (a released MatterGen checkpoint has none)")
    stand_ins = [(_inert_class(name), name) for name in named]
    with torch.serialization.safe_globals(stand_ins):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' dict inside)")
    return checkpoint


# ------------------------------------------------------------------------------------------------ where models are
def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mattergen_kit" / "mattergen"


def search_dirs() -> list[Path]:
    shared = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return shared + [cache_dir()]


def is_model_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


@dataclass
class ModelLocation:
    name: str
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.yaml"

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def fingerprint(self) -> tuple[int, str] | None:
        return KNOWN_CHECKPOINTS.get(self.name)


def resolve_model(name_or_path: str | Path) -> ModelLocation:
    """A folder with ``config.yaml`` (its name picks the published fingerprint), or a released model's name
    looked up in ``$MATTERGEN_KIT_MODELS`` and the cache. FileNotFoundError says where it looked and how to get it."""
    text = str(name_or_path)
    if text.startswith("mattergen:"):
        text = text[len("mattergen:"):]
    path = Path(text).expanduser()
    if is_model_dir(path):
        return ModelLocation(path.resolve().name, path)
    if path.exists():
        raise FileNotFoundError(f"{path} has no config.yaml: a MatterGen model folder holds config.yaml and "
                                "checkpoints/last.ckpt (the released layout)")
    looked = []
    for root in search_dirs():
        for candidate in (root / text, root / "checkpoints" / text):
            looked.append(str(candidate))
            if is_model_dir(candidate):
                return ModelLocation(text, candidate)
    known = ", ".join(KNOWN_CHECKPOINTS)
    hint = (f"fetch it with `mattergen-kit fetch-model {text}` (mk.fetch_model({text!r}))" if text in KNOWN_CHECKPOINTS
            else f"the released models are: {known}")
    raise FileNotFoundError(f"MatterGen model {text!r} not found (looked in {', '.join(looked)}); {hint}, or set "
                            f"{MODELS_ENV} to a folder holding <name>/config.yaml and <name>/checkpoints/last.ckpt")


# ------------------------------------------------------------------------------------------------ download
def manual_hint(name: str, dest: Path) -> str:
    return (f"download checkpoints/{name}/config.yaml and checkpoints/{name}/checkpoints/last.ckpt from "
            f"https://huggingface.co/{HF_REPO} by hand (or huggingface_hub.snapshot_download('{HF_REPO}', "
            f"allow_patterns='checkpoints/{name}/*')) into {dest}, or point {MODELS_ENV} at a folder that has them")


def _download(url: str, target: Path, timeout: float, expected_size: int | None = None) -> None:
    """GET ``url`` into ``target`` through ``target.part``, resuming a partial file with an HTTP Range request.
    ``timeout`` bounds the connection and every read (an idle connection fails, a slow one does not)."""
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size:
        part.replace(target)
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = have and response.status == 206
        with open(part, "ab" if resumed else "wb") as out:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                out.write(block)
    part.replace(target)


def fetch_model(name: str, dest: str | Path | None = None, base_url: str | None = None,
                timeout: float = CONNECT_TIMEOUT_S, progress: bool = True) -> Path:
    """Download a released MatterGen model into ``dest`` (default: the kit's cache ``<cache>/<name>``).

    The checkpoint's size and sha256 are checked against the published ones before anything reads it; an
    interrupted download resumes. Without internet it fails within ``timeout`` seconds with one line
    (:class:`ModelFetchError`) naming the manual alternative. Returns the model folder."""
    if name not in KNOWN_CHECKPOINTS:
        raise ValueError(f"unknown MatterGen model {name!r}; the released models are: {', '.join(KNOWN_CHECKPOINTS)}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout < float("inf")):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    folder = Path(dest) if dest is not None else cache_dir() / name
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"dest {folder} is a file, not a folder; give a folder for the model")
    base = (base_url or os.environ.get("MATTERGEN_KIT_HF_URL") or HF_BASE_URL).rstrip("/")
    size, sha = KNOWN_CHECKPOINTS[name]
    checkpoint = folder / CHECKPOINT_FILE
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not (folder / "config.yaml").is_file():
            _download(f"{base}/checkpoints/{name}/config.yaml", folder / "config.yaml", timeout)
        if not (checkpoint.is_file() and checkpoint.stat().st_size == size):
            if progress:
                print(f"downloading {name} ({size / 1e6:.0f} MB) into {folder}", flush=True)
            _download(f"{base}/checkpoints/{name}/checkpoints/last.ckpt", checkpoint, timeout, size)
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelFetchError(f"could not download {name} from {base} ({reason}); {manual_hint(name, folder)}") from None
    try:
        verify_fingerprint(checkpoint, size, sha)
    except FingerprintError as exc:
        checkpoint.rename(checkpoint.with_name(checkpoint.name + ".bad"))
        raise ModelFetchError(f"{exc} (kept as {checkpoint.name}.bad); {manual_hint(name, folder)}") from None
    return folder


def is_mattergen_reference(path_or_name) -> bool:
    """True for what :func:`resolve_model` reads: ``mattergen:NAME``, a released model's name, or a folder with
    ``config.yaml`` (MatterGen's layout). A file (the kit's own checkpoints) is never one."""
    text = str(path_or_name)
    if text.startswith("mattergen:"):
        return True
    path = Path(text).expanduser()
    if path.is_file():
        return False
    return is_model_dir(path) or (not path.exists() and text in KNOWN_CHECKPOINTS)


def fetch_model_cli(argv=None) -> int:
    """``mattergen-kit fetch-model NAME [--dest DIR] [--base-url URL] [--timeout S]``; returns the exit code."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="mattergen-kit fetch-model",
                                description=f"Download one of MatterGen's released models from huggingface.co/{HF_REPO} "
                                            "and verify its published size and sha256.")
    p.add_argument("name", help=f"one of: {', '.join(KNOWN_CHECKPOINTS)}")
    p.add_argument("--dest", default=None, help="model folder (default: the kit's cache, <cache>/<name>)")
    p.add_argument("--base-url", default=None, help="mirror of .../microsoft/mattergen/resolve/main")
    p.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT_S,
                   help=f"seconds to wait for a connection or for the next bytes (default {CONNECT_TIMEOUT_S:g})")
    args = p.parse_args(argv)
    if args.name not in KNOWN_CHECKPOINTS:
        print(f"error: unknown MatterGen model {args.name!r}; choose from {', '.join(KNOWN_CHECKPOINTS)}",
              file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"error: --timeout must be > 0 seconds, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        folder = fetch_model(args.name, dest=args.dest, base_url=args.base_url, timeout=args.timeout)
    except (ModelFetchError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"verified {args.name}: {folder} (use it as --model mattergen:{args.name} or mk.load_model({args.name!r}))")
    return 0
