"""Fetch the source files (:data:`~mattergen_kit.data.paths.SOURCE_FILES`): the raw CSVs the bundled sets are built
from, kept out of the repository (issue 23) and verified by the sha256 that ``SHA256SUMS`` records.

    mattergen-kit fetch-data sources                     # from their pinned upstream URLs (needs internet)
    mattergen-kit fetch-data sources --from ../shared/data   # offline: copy from a folder holding the same files

A file already present and intact is kept; a copied or downloaded file is checked before it is renamed into place
(a wrong or partial file leaves nothing behind).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mattergen_kit.data.mp20 import DEADLINE_S, IDLE_TIMEOUT_S, _download
from mattergen_kit.data.paths import (SOURCE_FILES, DataIntegrityError, data_root, read_sha256sums, sha256_file,
                                      source_path, user_root)

__all__ = ["fetch_sources"]


def fetch_sources(from_dir: str | os.PathLike | None = None, *, timeout: float = IDLE_TIMEOUT_S,
                  total_timeout: float | None = DEADLINE_S, log=print) -> dict[str, Path]:
    """Put every source file in place (verified); returns ``{relative path: path}``.

    ``from_dir``: copy from this folder (same layout, e.g. a mirror or ``../shared/data``) instead of downloading.
    Files go to :func:`~mattergen_kit.data.paths.user_root` (the checkout's ``datasets/``, or the user cache for a
    wheel install)."""
    sums = read_sha256sums(data_root())
    deadline = None if total_timeout is None else time.monotonic() + total_timeout
    out = {}
    for rel, url in SOURCE_FILES.items():
        expected = sums.get(rel)
        if expected is None:
            raise DataIntegrityError(f"{rel} has no sha256 in {data_root() / 'SHA256SUMS'}: cannot verify it")
        present = source_path(rel)
        if present.exists() and sha256_file(present) == expected:
            out[rel] = present
            continue
        dest = user_root() / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if from_dir is not None:
            src = Path(from_dir) / rel
            if not src.is_file():
                raise FileNotFoundError(f"{src} does not exist: --from must be a folder with {rel} in it")
            tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
            try:
                shutil.copyfile(src, tmp)
                got = sha256_file(tmp)
                if got != expected:
                    raise DataIntegrityError(f"{src} has sha256 {got[:12]}…, not the recorded {expected[:12]}…: "
                                             "a different or damaged copy; nothing was copied")
                os.replace(tmp, dest)
            finally:
                if tmp.exists():
                    tmp.unlink()
        else:
            _download(url, dest, expected, timeout, deadline, fingerprint=sha256_file, what="the recorded",
                      fingerprint_name="sha256")
        log(f"verified {rel} ({dest.stat().st_size / 1e6:.1f} MB) -> {dest}")
        out[rel] = dest
    return out
