"""Where the data live, and checking that the raw files are intact.

* data root: ``MATTERGEN_KIT_DATA`` if set, else the repository's ``datasets/`` folder
  (``Path(mattergen_kit.__file__).parents[1] / "datasets"``), else — in a wheel install — the copy shipped
  as package data, ``mattergen_kit/bundled_data``;
* cache root: ``MATTERGEN_KIT_CACHE`` if set, else ``<data root>/cache`` (git-ignored), or for a wheel
  install ``$XDG_CACHE_HOME/mattergen_kit/cache`` (site-packages is not a place to write to).

Raw files are verified against ``<data root>/SHA256SUMS`` (``sha256sum`` format) before they are
parsed; a mismatch raises :class:`DataIntegrityError` naming the file and how to restore it.

*Source files* (:data:`SOURCE_FILES`: MP-20's binary/ternary and MPTS-52's val/test CSVs, 8 MB) are recorded in
``SHA256SUMS`` but not kept in the repository (issue 23: the tracked tree stays ≤ 35 MiB). Everything a user runs
offline reads the bundled set shipped precomputed (``datasets/precomputed/``); only a rebuild of that set, the
52-atom set and ``calibrate``'s MPTS-52 structures read the source files, which ``mattergen-kit fetch-data sources``
fetches (verified by sha256) into :func:`user_root`. Their recorded digests still key the caches
(:func:`source_digest`), so a present, intact source file and an absent one name the same precomputed set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["DataIntegrityError", "SourceFilesMissing", "data_root", "user_root", "cache_root", "sha256_file",
           "read_sha256sums", "verify_file", "git_blob_id", "SOURCE_FILES", "source_path", "source_digest",
           "missing_sources"]


class DataIntegrityError(RuntimeError):
    """A raw data file does not match its recorded checksum (corrupt, truncated or replaced)."""


class SourceFilesMissing(FileNotFoundError):
    """A source file (:data:`SOURCE_FILES`) is needed but has not been fetched."""


_WYCKOFF = ("https://raw.githubusercontent.com/SymmetryAdvantage/WyckoffTransformer/"
            "507e8f147a0e87905c2574ebfbbfc9fa21c2fb09/data/")
#: source files kept out of the repository: relative path -> pinned upstream URL (datasets/PROVENANCE.md)
SOURCE_FILES = {
    "mp20_biternary/val.csv.gz": _WYCKOFF + "mp_20_biternary/val.csv.gz",
    "mp20_biternary/test.csv.gz": _WYCKOFF + "mp_20_biternary/test.csv.gz",
    "mpts_52/val.csv.gz": _WYCKOFF + "mpts_52/val.csv.gz",
    "mpts_52/test.csv.gz": _WYCKOFF + "mpts_52/test.csv.gz",
}
FETCH_HINT = ("fetch them with `mattergen-kit fetch-data sources` (8 MB from GitHub, verified by sha256; offline: "
              "`mattergen-kit fetch-data sources --from DIR` with a copy of the files, e.g. ../shared/data)")


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


def source_path(relpath: str, root: Path | None = None) -> Path:
    """Where ``relpath`` is read from: ``<root>/<relpath>``, or for a source file not there, its fetched copy under
    :func:`user_root` (a wheel install's data folder is not writable). The path may not exist yet."""
    root = Path(root) if root is not None else data_root()
    path = root / relpath
    if relpath in SOURCE_FILES and not path.exists() and root == data_root():
        fetched = user_root() / relpath
        if fetched.exists():
            return fetched
    return path


def missing_sources(relpaths=None, root: Path | None = None) -> list[str]:
    """The source files among ``relpaths`` (default all of :data:`SOURCE_FILES`) that are not fetched."""
    return [r for r in (relpaths if relpaths is not None else SOURCE_FILES)
            if r in SOURCE_FILES and not source_path(r, root).exists()]


def source_digest(relpath: str, root: Path | None = None, sums: dict[str, str] | None = None) -> str:
    """The sha256 that keys caches built from ``relpath``: the verified file's when it is present (a damaged file
    raises), else — for a source file not fetched — the digest ``SHA256SUMS`` records for it."""
    root = Path(root) if root is not None else data_root()
    sums = sums if sums is not None else read_sha256sums(root)
    if relpath in SOURCE_FILES and relpath in sums and not source_path(relpath, root).exists():
        return sums[relpath]
    return verify_file(relpath, root, sums)


def verify_file(relpath: str, root: Path | None = None, sums: dict[str, str] | None = None) -> str:
    """Check ``<root>/<relpath>`` against SHA256SUMS; return its sha256 or raise a clear error."""
    root = Path(root) if root is not None else data_root()
    sums = sums if sums is not None else read_sha256sums(root)
    path = source_path(relpath, root)
    if relpath not in sums:
        raise DataIntegrityError(f"{path} has no entry in {root / 'SHA256SUMS'}; add one with "
                                 f"`cd {root} && sha256sum ./{relpath} >> SHA256SUMS` if the file is genuine.")
    if not path.exists() and relpath in SOURCE_FILES:
        raise SourceFilesMissing(f"source file {relpath} is not here (the bundled data's raw CSVs are not kept in "
                                 f"the repository): {FETCH_HINT}")
    if not path.exists():
        raise FileNotFoundError(f"bundled data file {path} is missing; restore it with `git checkout -- datasets/` "
                                "(or point MATTERGEN_KIT_DATA at a complete copy).")
    digest = sha256_file(path)
    if digest != sums[relpath] and relpath in SOURCE_FILES:
        raise DataIntegrityError(f"{path} is corrupt or was modified: sha256 {digest} but SHA256SUMS records "
                                 f"{sums[relpath]}. Delete it and {FETCH_HINT.replace('fetch them', 'fetch it')}.")
    if digest != sums[relpath]:
        raise DataIntegrityError(
            f"{path} is corrupt or was modified: sha256 {digest} but SHA256SUMS records {sums[relpath]}. "
            f"Restore it with `git checkout -- {path.relative_to(root.parent) if root.parent in path.parents else path}` "
            "(or re-copy the datasets folder); check all files with `cd datasets && sha256sum -c SHA256SUMS`.")
    return digest
