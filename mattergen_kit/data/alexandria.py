"""Alexandria database dumps (https://alexandria.icams.rub.de/): ``{"entries": [ComputedStructureEntry dicts]}``.

Each published file (``alexandria_000.json.bz2`` ...) holds a JSON object whose ``"entries"`` list contains
pymatgen ``ComputedStructureEntry`` dicts: ``energy``, ``correction``, ``entry_id``, ``structure`` (a
Structure dict) and ``data`` (``e_above_hull``, ``e_form``, ``band_gap_ind``, ``band_gap_dir``,
``total_mag``, ``mat_id``, ``spg``, ...). The files are large (hundreds of MB decompressed), so
:func:`iter_json_array` streams the entries with ``json.JSONDecoder.raw_decode`` over text chunks and
never holds more than a few entries in memory. Entries are filtered on their number of sites and
``e_above_hull`` *before* a Structure is built.

Properties: ``material_id`` (``data.mat_id`` or ``entry_id``), ``e_above_hull`` and ``formation_energy_per_atom``
(``data.e_form``) in eV/atom, ``band_gap`` (= ``band_gap_ind``, eV), ``band_gap_dir``, ``total_magnetization``
(``data.total_mag``, μB per cell), ``magnetic_density`` (total_mag / volume, μB/Å³), ``energy_per_atom``
((energy + correction) / N), ``spacegroup`` (``data.spg`` where given), plus the common labels.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from mattergen_kit.data.dataset import CrystalDataset, _isnum
from mattergen_kit.data.report import LoadReport, Skip, check_load_options
from mattergen_kit.data.parsing import process_records

__all__ = ["load_alexandria", "iter_json_array", "open_text"]

CHUNK = 1 << 20


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a .json / .json.bz2 / .json.gz / .json.xz file as text."""
    path = str(path)
    if path.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, "rt", encoding="utf-8")


def iter_json_array(stream: io.TextIOBase, key: str = "entries", chunk: int = CHUNK) -> Iterator[dict]:
    """Yield the items of the array ``<top-level object>[key]`` one by one from a text stream.

    A small hand-written streaming decoder: it scans for ``"key"`` followed by ``:`` and ``[``, then
    repeatedly ``raw_decode``s one value from a buffer, reading more text whenever a value is incomplete.
    Raises ``ValueError`` (with the character offset) on malformed JSON, a missing key, or a truncated file.
    """
    decoder = json.JSONDecoder()
    buf = ""
    pos = 0  # position in buf
    consumed = 0  # characters dropped from the front of buf (for error offsets)
    eof = False

    def more() -> bool:
        nonlocal buf, pos, consumed, eof
        if eof:
            return False
        try:
            data = stream.read(chunk)
        except (EOFError, OSError, UnicodeDecodeError, lzma.LZMAError) as exc:
            raise ValueError(f"cannot read the file: {type(exc).__name__}: {exc} (corrupt or truncated archive)") \
                from None
        if not data:
            eof = True
            return False
        buf = buf[pos:] + data
        consumed += pos
        pos = 0
        return True

    needle = json.dumps(key)
    # 1) find "key" : [   (the first such array in the file)
    pattern = re.compile(re.escape(needle) + r"\s*:\s*\[")
    while True:
        m = pattern.search(buf, pos)
        if m:
            pos = m.end()
            break
        pos = max(pos, len(buf) - 4096)  # keep a tail in case the needle straddles two chunks
        if not more():
            raise ValueError(f"no {needle} array found: not an Alexandria/ComputedStructureEntry dump "
                             "(expected {\"entries\": [...]})")
    # 2) decode items: value (',' value)* ']'
    first = True
    while True:
        while True:
            while pos < len(buf) and buf[pos].isspace():
                pos += 1
            if pos < len(buf) or not more():
                break
        if pos >= len(buf):
            raise ValueError(f"truncated JSON: the {needle} array is not closed (offset {consumed + pos})")
        if buf[pos] == "]":
            return
        if not first:
            if buf[pos] != ",":
                raise ValueError(f"malformed JSON in the {needle} array at offset {consumed + pos}: expected ',' "
                                 f"or ']' but found {buf[pos]!r}")
            pos += 1
            while True:
                while pos < len(buf) and buf[pos].isspace():
                    pos += 1
                if pos < len(buf) or not more():
                    break
        first = False
        while True:
            try:
                item, end = decoder.raw_decode(buf, pos)
                if end < len(buf) or eof or not more():  # a number at the buffer's end may continue
                    break
            except json.JSONDecodeError as exc:
                if not more():
                    raise ValueError(f"malformed or truncated JSON in the {needle} array at offset "
                                     f"{consumed + exc.pos}: {exc.msg}") from None
        if end >= len(buf):  # re-decode after a final read (buffer may have moved)
            item, end = decoder.raw_decode(buf, pos)
        pos = end
        yield item


def load_alexandria(path: str | os.PathLike | list, *, max_atoms: int | None = 20,
                    e_above_hull_max: float | None = 0.1, limit: int | None = None, workers: int = 2,
                    progress: bool = True, name: str | None = None) -> CrystalDataset:
    """Stream an Alexandria dump (``.json``, ``.json.bz2``, ``.json.gz``; or a list of them) into a dataset.

    Entries with more than ``max_atoms`` sites or ``e_above_hull`` above ``e_above_hull_max`` (eV/atom) are
    counted as filtered in ``.report``; entries without a usable structure as invalid (file and entry index).
    ``limit`` stops after that many kept candidates (for a quick look at a big file).
    """
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths:
        raise ValueError("load_alexandria needs at least one dump file (got an empty list)")
    for p in paths:
        check_load_options(p)
    check_load_options(max_atoms=max_atoms, e_above_hull_max=e_above_hull_max, limit=limit)
    paths = [Path(p) for p in paths]
    report = LoadReport(name=name or paths[0].name, sources=[str(p) for p in paths])
    records, rows_props = [], {}
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist (download Alexandria dumps from "
                                    "https://alexandria.icams.rub.de/)")
        with open_text(p) as stream:
            try:
                for k, entry in enumerate(iter_json_array(stream, "entries")):
                    if _take_entry(p.name, k, entry, max_atoms, e_above_hull_max, report, records, rows_props) \
                            and limit is not None and len(records) >= limit:
                        break
            except ValueError as exc:
                raise ValueError(f"{p}: {exc}") from None
    results = process_records(records, workers=workers, progress=progress, desc="parsing Alexandria")
    ds = CrystalDataset.from_results(results, rows_props, report, "alexandria", name or paths[0].name)
    for s in ds.report.skipped:  # name the file and the entry index
        if isinstance(s.row, tuple):
            s.source, s.row = s.row
    ds.properties["source"] = [f"alexandria:{rec[0][0]}" for rec, res in zip(records, results) if res.ok]
    return ds


def _take_entry(fname, k, entry, max_atoms, e_above_hull_max, report, records, rows_props) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("structure"), dict):
        report.skipped.append(Skip(fname, k, "entry has no structure dict"))
        return False
    data = entry.get("data") or {}
    mid = str(data.get("mat_id") or entry.get("entry_id") or f"{Path(fname).stem}-{k}")
    sites = entry["structure"].get("sites")
    if not isinstance(sites, list):
        report.skipped.append(Skip(fname, k, "structure dict has no sites list", "invalid", mid))
        return False
    if max_atoms is not None and len(sites) > max_atoms:
        report.skipped.append(Skip(fname, k, f"too many atoms: {len(sites)} > max_atoms={max_atoms}", "filtered", mid))
        return False
    eh = data.get("e_above_hull")
    if e_above_hull_max is not None and _isnum(eh) and eh > e_above_hull_max:
        report.skipped.append(Skip(fname, k, f"e_above_hull {eh:.3f} > {e_above_hull_max} eV/atom", "filtered", mid))
        return False
    energy, corr, n = entry.get("energy"), entry.get("correction") or 0.0, len(sites)
    lat = entry["structure"].get("lattice") or {}
    vol = lat.get("volume")
    if not _isnum(vol):
        try:
            vol = abs(float(np.linalg.det(np.asarray(lat.get("matrix"), dtype=float))))
        except Exception:
            vol = None
    mag = data.get("total_mag")
    num = lambda v: v if _isnum(v) else np.nan  # noqa: E731
    rows_props[(fname, k)] = {
        "material_id": mid, "e_above_hull": num(eh), "formation_energy_per_atom": num(data.get("e_form")),
        "band_gap": num(data.get("band_gap_ind")), "band_gap_dir": num(data.get("band_gap_dir")),
        "total_magnetization": num(mag),
        "magnetic_density": mag / vol if _isnum(mag) and _isnum(vol) and vol > 0 else np.nan,
        "energy_per_atom": (energy + corr) / n if _isnum(energy) and _isnum(corr) and n else np.nan,
    }
    spg = data.get("spg")
    records.append(((fname, k), entry["structure"], "structure", {"spacegroup": spg if _isnum(spg) else None},
                    {"max_atoms": max_atoms}))
    return True
