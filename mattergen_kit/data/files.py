"""Reading structure files from a folder (recursive) or a zip: one reader shared by ``load_cif_folder``,
the ICSD loader and evaluation. Unreadable entries (a dangling or looping symlink) are reported, not dropped."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mattergen_kit.data.dataset import CrystalDataset
from mattergen_kit.data.parsing import StructureError, parse_extxyz_text, process_records
from mattergen_kit.data.report import LoadReport, Skip, check_load_options

__all__ = ["iter_structure_files", "load_cif_folder", "STRUCTURE_FILE_SUFFIXES"]


STRUCTURE_FILE_SUFFIXES = (".cif", ".extxyz", ".xyz")


def iter_structure_files(path: Path):
    """Yield ``(name, raw bytes, problem)`` for every CIF/extxyz file in a folder (recursive) or a zip archive.

    ``problem`` is None, or why a file could not be read (a symlink that dangles or loops, no permission):
    such files are yielded with ``raw=b""`` so that loaders report them as skips instead of dropping them.
    """
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.suffix.lower() not in STRUCTURE_FILE_SUFFIXES or (p.is_dir() and not p.is_symlink()):
                continue
            name = str(p.relative_to(path))
            try:
                yield name, p.read_bytes(), None
            except OSError as exc:
                target = os.readlink(p) if p.is_symlink() else None
                why = exc.strerror or type(exc).__name__
                yield name, b"", (f"symlink to {target} cannot be read ({why})" if target is not None
                                  else f"cannot be read ({why})")
        return
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (give a folder or a .zip of CIF/extxyz files)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a folder nor a zip archive (or the zip is corrupt); give a folder or "
                         "a .zip of .cif/.extxyz files")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.lower().endswith(STRUCTURE_FILE_SUFFIXES):
                    continue
                yield info.filename, zf.read(info), None
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path} is a corrupt zip archive ({exc}); re-create or re-download it") from None


def _structure_file_records(path: Path, report: LoadReport, options: dict):
    records, rows_props = [], {}
    n_files = 0
    for fname, raw, problem in iter_structure_files(path):
        n_files += 1
        if problem:
            report.skipped.append(Skip(fname, 0, problem))
            continue
        try:
            text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = raw.decode("latin-1")
            except Exception:  # pragma: no cover
                report.skipped.append(Skip(fname, 0, "not a text file"))
                continue
        if "\x00" in text:
            report.skipped.append(Skip(fname, 0, "binary (not a text CIF/extxyz) file"))
            continue
        if not text.strip():
            report.skipped.append(Skip(fname, 0, "empty file"))
            continue
        stem = Path(fname).stem
        if fname.lower().endswith(".cif"):
            row = f"{fname}"
            rows_props[row] = {"material_id": stem, "file": fname}
            records.append((row, text, "cif", {}, options))
        else:
            try:
                frames = parse_extxyz_text(text)
            except StructureError as exc:
                report.skipped.append(Skip(fname, 0, str(exc)))
                continue
            for k, s in enumerate(frames):
                row = f"{fname}#{k}"
                rows_props[row] = {"material_id": f"{stem}-{k}" if len(frames) > 1 else stem, "file": fname}
                records.append((row, s, "structure", {}, options))
    if n_files == 0:
        raise ValueError(f"{path} holds no .cif/.extxyz files")
    return records, rows_props


def load_cif_folder(path: str | os.PathLike, *, max_atoms: int | None = None, workers: int = 2,
                    progress: bool = True, name: str | None = None) -> CrystalDataset:
    """Load every ``.cif`` / ``.extxyz`` file of a folder (recursive) or a ``.zip``.

    ``material_id`` is the file stem (``<stem>-<k>`` for frame k of a multi-frame extxyz), ``file`` the
    path inside the folder/zip. Unparsable/invalid files are skipped and listed in ``.report``.
    """
    check_load_options(path, max_atoms=max_atoms)
    path = Path(path)
    report = LoadReport(name=name or path.name, sources=[str(path)])
    records, rows_props = _structure_file_records(path, report, {"max_atoms": max_atoms})
    results = process_records(records, workers=workers, progress=progress, desc=f"parsing {path.name}")
    out_report = report
    ds = CrystalDataset.from_results(results, rows_props, out_report, path.name, name or path.name)
    # per-file skips should name the file: rewrite source of record skips to the file path
    for s in ds.report.skipped:
        if s.source == path.name and isinstance(s.row, str):
            s.source, s.row = f"{path.name}/{s.row.split('#')[0]}", (int(s.row.split("#")[1]) if "#" in s.row else 0)
    return ds
