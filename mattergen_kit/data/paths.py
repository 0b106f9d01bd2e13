"""Where the data live, and checking that the raw files are intact.

* data root: ``MATTERGEN_KIT_DATA`` if set, else the repository's ``datasets/`` folder
  (``Path(mattergen_kit.__file__).parents[1] / "datasets"``), else — in a wheel install — the copy shipped
  as package data, ``mattergen_kit/bundled_data``;
* cache root: ``MATTERGEN_KIT_CACHE`` if set, else ``<data root>/cache`` (git-ignored), or for a wheel
  install ``$XDG_CACHE_HOME/mattergen_kit/cache`` (site-packages is not a place to write to).

Raw files are verified against ``<data root>/SHA256SUMS`` (``sha256sum`` format) before they are
parsed; a mismatch raises :class:`DataIntegrityError` naming the file and how to restore it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["DataIntegrityError", "data_root", "user_root", "cache_root", "sha256_file", "read_sha256sums", "verify_file",
           "git_blob_id"]


class DataIntegrityError(RuntimeError):
    """A raw data file does not match its recorded checksum (corrupt, truncated or replaced)."""


#: where a wheel install keeps the bundled data (pyproject.toml maps the repository's datasets/ here)
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "bundled_data"
#: the repository checkout's data folder (an editable install or a source tree)
CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "datasets"


def data_root() -> Path:
    """The folder that holds the bundled data: ``MATTERGEN_KIT_DATA`` if set, else the checkout's ``datasets/``,
    else the copy installed with the package (``mattergen_kit/bundled_data``)."""
    env = os.environ.get("MATTERGEN_KIT_DATA")
    if env:
        return Path(env).expanduser()
    if not (CHECKOUT_DATA / "SHA256SUMS").is_file() and (PACKAGE_DATA / "SHA256SUMS").is_file():
        return PACKAGE_DATA
    return CHECKOUT_DATA


def user_root() -> Path:
    """A writable folder for what an installed package builds or downloads: the checkout's ``datasets/`` in a
    source tree, else ``$XDG_CACHE_HOME/mattergen_kit`` (default ``~/.cache/mattergen_kit``)."""
    root = data_root()
    if root != PACKAGE_DATA:
        return root
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "mattergen_kit"


def cache_root() -> Path:
    """The tensor/query cache folder (``MATTERGEN_KIT_CACHE`` overrides ``<data root>/cache``, and an installed
    package caches under :func:`user_root`); created on demand."""
    env = os.environ.get("MATTERGEN_KIT_CACHE")
    root = Path(env).expanduser() if env else user_root() / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Git's blob id of a file: sha1(b"blob <size>\\0" + content) (what ``git hash-object`` prints)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_sha256sums(root: Path | None = None) -> dict[str, str]:
    """``{relative path: sha256}`` from ``<root>/SHA256SUMS`` (paths normalised without a leading ``./``)."""
    root = Path(root) if root is not None else data_root()
    sums_file = root / "SHA256SUMS"
    if not sums_file.exists():
        raise FileNotFoundError(f"{sums_file} is missing: the bundled data folder is incomplete. Restore it from "
                                "the repository (git checkout -- datasets/) or set MATTERGEN_KIT_DATA to a full copy.")
    sums = {}
    for line in sums_file.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*")
        if name.startswith("./"):
            name = name[2:]
        sums[name] = digest.lower()
    return sums


def verify_file(relpath: str, root: Path | None = None, sums: dict[str, str] | None = None) -> str:
    """Check ``<root>/<relpath>`` against SHA256SUMS; return its sha256 or raise a clear error."""
    root = Path(root) if root is not None else data_root()
    sums = sums if sums is not None else read_sha256sums(root)
    path = root / relpath
    if relpath not in sums:
        raise DataIntegrityError(f"{path} has no entry in {root / 'SHA256SUMS'}; add one with "
                                 f"`cd {root} && sha256sum ./{relpath} >> SHA256SUMS` if the file is genuine.")
    if not path.exists():
        raise FileNotFoundError(f"bundled data file {path} is missing; restore it with `git checkout -- datasets/` "
                                "(or point MATTERGEN_KIT_DATA at a complete copy).")
    digest = sha256_file(path)
    if digest != sums[relpath]:
        raise DataIntegrityError(
            f"{path} is corrupt or was modified: sha256 {digest} but SHA256SUMS records {sums[relpath]}. "
            f"Restore it with `git checkout -- {path.relative_to(root.parent) if root.parent in path.parents else path}` "
            "(or re-copy the datasets folder); check all files with `cd datasets && sha256sum -c SHA256SUMS`.")
    return digest
