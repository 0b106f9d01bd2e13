"""Evaluation caches: formats that cannot run code, and a visible message for every cache build.

Every cache under ``datasets/cache/evaluation/`` is numbers or tables only: ``.npz``/``.npy`` read with
``allow_pickle=False``, ``.parquet`` (pyarrow) or ``.json``. Nothing is unpickled, so a file planted in
the cache folder is at worst rejected as unreadable (and rebuilt) — it never executes. A cache that
cannot be read is rebuilt with a warning naming it.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def building(what: str, path: Path):
    """Say on stderr what cache is being built (and where), then how long it took."""
    print(f"building {what} (once; cached in {path}) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"built {what} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def save_arrays(path: Path, **arrays) -> None:
    """Write numeric arrays to ``path`` (.npz) through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an .npz cache (``allow_pickle=False``), or None (with a warning) when it is unreadable."""
    import warnings

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt from its verified source
        warnings.warn(f"rebuilding the unreadable cache {path} ({type(exc).__name__}: {str(exc)[:120]})")
        return None
