"""Derived data shipped precomputed, so the first ``evaluate`` / ``load_bundled`` on a fresh clone builds nothing slow.

Files live in ``<data root>/precomputed/`` and are numbers and tables only — ``.npz`` (read with
``allow_pickle=False``) and ``.json`` — never a pickle. Each file's sha256 is recorded in
``<data root>/precomputed/SHA256SUMS``; a file whose digest disagrees (edited, truncated, replaced) is refused with a
warning and the data are built from the raw files as before. Each file name carries the key of what it stands for
(e.g. the bundled set's cache key, made from the raw CSVs' sha256 and the filter settings), so after the source data
or a setting changes, no precomputed file matches and the slow build runs (with a progress bar).

What is shipped (regenerate all with ``python tools/precompute_caches.py``):

* ``mp-bundled-20-<key>.npz``: the canonicalised bundled set (atom types, fractional coordinates, lattices,
  property table, load report) — parsing and canonicalising them took ~11 min on this 2-core machine, busy;
* ``fp-<reference>-<n>-<hash>.npz``: CrystalNN / Magpie fingerprints of the default 1,000 reference crystals (471 s to build);
* ``bandgap-hgb-<n_train>-<n_test>.npz``: the band-gap model's trees (:mod:`mattergen_kit.evaluation.properties`).

Tables that build in seconds (the MP-20 phases table, ~2 s; the default ``mp20+mpfe`` hull, ~7 s) are not shipped: they
are built into the cache at first use.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

__all__ = ["precomputed_dir", "find_precomputed", "record_precomputed", "SUMS_NAME"]

SUMS_NAME = "SHA256SUMS"


def precomputed_dir() -> Path:
    """``<data root>/precomputed`` (the repository's ``datasets/precomputed`` or the installed copy)."""
    from mattergen_kit.data.paths import data_root

    return data_root() / "precomputed"


def _sums(folder: Path) -> dict[str, str]:
    path = folder / SUMS_NAME
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*").removeprefix("./")] = parts[0]
    return out


def find_precomputed(name: str) -> Path | None:
    """The shipped file ``name`` if it exists and its sha256 matches ``SHA256SUMS``; else None (a mismatch or a
    missing checksum warns: the caller then builds the data itself)."""
    from mattergen_kit.data.paths import sha256_file

    folder = precomputed_dir()
    path = folder / name
    if not path.is_file():
        return None
    expected = _sums(folder).get(name)
    if expected is None:
        warnings.warn(f"{path} has no checksum in {folder / SUMS_NAME}: not used (it will be built instead)")
        return None
    if sha256_file(path) != expected:
        warnings.warn(f"{path} does not match its sha256 in {folder / SUMS_NAME} (edited or damaged): not used, "
                      "building it instead; restore it with `git checkout -- datasets/precomputed`")
        return None
    return path


def recompress_lzma(path: Path) -> Path:
    """Rewrite the ``.npz`` at ``path`` with LZMA-compressed members (the same arrays; ``np.load`` reads it as before)
    and fixed member dates, so the same arrays give the same bytes. The shipped bundled set is 2.7 MB instead of
    3.9 MB with numpy's default deflate (issue 23's repository budget)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".lzma.tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as out:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_LZMA
            out.writestr(member, src.read(info))
    tmp.replace(path)
    return path


def record_precomputed(path: Path) -> str:
    """Add or update ``path``'s sha256 in its folder's ``SHA256SUMS`` (sorted, ``sha256sum`` format); an ``.npz`` is
    first rewritten with LZMA-compressed members (:func:`recompress_lzma`)."""
    from mattergen_kit.data.paths import sha256_file

    path = Path(path)
    if path.suffix == ".npz":
        recompress_lzma(path)
    sums = _sums(path.parent)
    sums[path.name] = sha256_file(path)
    (path.parent / SUMS_NAME).write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
    return sums[path.name]
