"""The full MP-20 (CDVAE's ``data/mp_20/{train,val,test}.csv``) for users with internet.

``fetch_mp20(root)`` downloads each CSV to a temporary file *in the target folder*, checks its git blob id
(sha1 of ``b"blob <size>\\0" + content``, the fingerprints recorded in ``datasets/PROVENANCE.md``), and only
then renames it into place with ``os.replace``; a wrong, partial or interrupted download raises
:class:`~mattergen_kit.data.paths.DataIntegrityError` and leaves nothing behind. ``load_mp20(split)`` reads
(and verifies) the files through :func:`~mattergen_kit.data.csv_table.load_csv` with the tensor cache.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from mattergen_kit.data.csv_table import load_csv
from mattergen_kit.data.dataset import CrystalDataset
from mattergen_kit.data.paths import DataIntegrityError, git_blob_id, user_root

__all__ = ["fetch_mp20", "load_mp20", "MP20_BLOB_IDS", "MP20_BASE_URL", "mp20_root"]

MP20_BASE_URL = "https://raw.githubusercontent.com/txie-93/cdvae/main/data/mp_20/"
#: git blob ids of CDVAE's data/mp_20/*.csv (datasets/PROVENANCE.md)
MP20_BLOB_IDS = {"train": "b1c9d498565ac2fd8d075a51ff2ef5e51ba6c21f",
                 "val": "7efe4d7ebeb4f460ceaad35e5326c42111d9c9a1",
                 "test": "5dc643041df53f5ce4970a79930ad262b4f07acd"}
SPLITS = ("train", "val", "test")
IDLE_TIMEOUT_S = 30.0     # no byte for this long: the mirror stalled
DEADLINE_S = 600.0        # the whole fetch (three CSVs, ~100 MB): 10 minutes is ~170 kB/s


def mp20_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root) if root is not None else user_root() / "mp20"


def _how_to_get(root: Path) -> str:
    return (f"Get it with `mattergen-kit fetch-data mp20` or `load_mp20(split, download=True)` (needs internet; "
            f"the files are verified against their git blob ids), or copy CDVAE's data/mp_20/*.csv into {root}. "
            "Without internet, use the bundled subset: mattergen_kit.datasets.load_bundled().")


def _download(url: str, dest: Path, expected_blob: str, timeout: float, deadline: float | None = None,
              fingerprint=git_blob_id, what: str = "MP-20's", fingerprint_name: str = "git blob id") -> None:
    """Download ``url`` to ``dest`` (verified, atomic). ``timeout``: seconds a single read may wait;
    ``deadline``: a ``time.monotonic()`` value by which the whole download must have finished; ``fingerprint``:
    the function of a file path whose value must equal ``expected_blob`` (default git's blob id; or sha256)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    size = 0
    try:
        try:
            wait = timeout if deadline is None else max(0.1, min(timeout, deadline - time.monotonic()))
            with urllib.request.urlopen(url, timeout=wait) as resp, open(tmp, "wb") as out:
                length = resp.headers.get("Content-Length")
                while True:
                    if deadline is not None and time.monotonic() > deadline:
                        raise DataIntegrityError(f"download of {url} did not finish in time ({size} bytes after "
                                                 "the deadline; raise --timeout or try another mirror); nothing "
                                                 "was saved")
                    block = resp.read1(1 << 16)  # returns what has arrived, so the deadline is checked often
                    if not block:
                        break
                    out.write(block)
                    size += len(block)
            if length is not None and int(length) != size:
                raise DataIntegrityError(f"download of {url} is partial: {size} of {length} bytes")
        except TimeoutError:  # socket timeout on a read (urlopen's connect timeout arrives as a URLError)
            raise DataIntegrityError(f"no data from {url} for {timeout:g} s after {size} bytes (the mirror stalled); "
                                     "nothing was saved: try again, another --base-url, or a longer --idle-timeout"
                                     ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise DataIntegrityError(f"could not download {url}: {type(exc).__name__}: {exc}") from None
        got = fingerprint(tmp)
        if got != expected_blob:
            raise DataIntegrityError(f"{url} has {fingerprint_name} {got} ({size} bytes) but {what} {dest.name} is "
                                     f"{expected_blob}: the download is corrupt, partial or a different file; "
                                     "nothing was saved. Try again (or check base_url).")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch_mp20(root: str | os.PathLike | None = None, base_url: str | None = None,
               splits: Iterable[str] = SPLITS, timeout: float = IDLE_TIMEOUT_S, force: bool = False,
               total_timeout: float | None = DEADLINE_S) -> dict[str, Path]:
    """Download and verify CDVAE's MP-20 CSVs into ``root`` (default ``<data root>/mp20``); returns {split: path}.

    ``base_url`` (default the raw GitHub folder of txie-93/cdvae ``data/mp_20/``) can point at a mirror;
    files already present with the right blob id are kept (``force=True`` re-downloads). ``timeout``: the
    longest a single read may wait for a byte (s; the idle timeout); ``total_timeout``: the deadline for the whole
    fetch (s; None: none), so a server that drips bytes cannot keep it running forever.
    """
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout (the idle timeout) must be > 0 seconds (got {timeout!r})")
    if total_timeout is not None and not total_timeout > 0:
        raise ValueError(f"total_timeout must be > 0 seconds (got {total_timeout})")
    deadline = None if total_timeout is None else time.monotonic() + total_timeout
    root = mp20_root(root)
    base = base_url or os.environ.get("MATTERGEN_KIT_MP20_URL") or MP20_BASE_URL
    base = base if base.endswith("/") else base + "/"
    out = {}
    for split in splits:
        if split not in MP20_BLOB_IDS:
            raise ValueError(f"unknown MP-20 split {split!r}; use {SPLITS}")
        dest = root / f"{split}.csv"
        if dest.exists() and not force and git_blob_id(dest) == MP20_BLOB_IDS[split]:
            out[split] = dest
            continue
        _download(base + f"{split}.csv", dest, MP20_BLOB_IDS[split], timeout, deadline)
        out[split] = dest
    return out


def load_mp20(split: str = "train", root: str | os.PathLike | None = None, download: bool = False,
              base_url: str | None = None, workers: int = 2, progress: bool = True) -> CrystalDataset:
    """Full MP-20 (CDVAE format), one split (train/val/test) or "all"; files verified by git blob id before use."""
    if split == "all":
        return CrystalDataset.concat([load_mp20(s, root, download, base_url, workers, progress) for s in SPLITS],
                                     name="mp20/all")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or 'all' (got {split!r})")
    root = mp20_root(root)
    path = root / f"{split}.csv"
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"MP-20 {split} split not found at {path}. " + _how_to_get(root))
        fetch_mp20(root, base_url=base_url, splits=[split])
    got = git_blob_id(path)
    if got != MP20_BLOB_IDS[split]:
        raise DataIntegrityError(f"{path} has git blob id {got}, not MP-20's {MP20_BLOB_IDS[split]}: the file is "
                                 f"corrupt or different. Delete it and re-fetch. " + _how_to_get(root))
    ds = load_csv(path, workers=workers, progress=progress, name=f"mp20/{split}")
    ds.name = f"mp20/{split}"
    return ds
