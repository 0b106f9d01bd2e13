"""Writing generated crystals to a folder without losing or mixing output.

A run folder holds, for ``num`` crystals:

* ``crystal_0000.cif`` ... one CIF per crystal, written as soon as its batch is sampled;
* ``generated_crystals.extxyz`` and ``generated_crystals_cif.zip`` — MatterGen's names, readable by
  MatterGen's own evaluation scripts and by :func:`mattergen_kit.evaluate`;
* ``summary.csv`` (file, formula, number of atoms, volume, density) and ``grid.png`` (a picture);
* ``manifest.json``: the run's settings and which batches are finished; ``.batches/batch_NNNNNN.npz``:
  each finished batch at full float precision (the final files are built from these, so a resumed run
  writes the same bytes as an uninterrupted one).

A sampled crystal is written as a crystal only if the kit can stand behind the file (:func:`crystal_cif`): it passes
the kit's own structural validity (:func:`mattergen_kit.data.structural.structural_validity`, the evaluator's rule:
finite cell, every pair of atoms, own periodic images included, ``d_ij ≥ 0.5 Å``), its volume is physical (``MIN_VOLUME_PER_ATOM ≤ V/N ≤
MAX_VOLUME_PER_ATOM``) and its CIF reads back through pymatgen as the same crystal (same number of sites, same
species). A crystal that fails is **rejected, not written**: no ``crystal_NNNN.cif``, no frame in the extxyz or the
zip; its name and the reason are recorded in ``manifest.json`` (``"rejected"``), in ``summary.csv`` (``written``
False, ``rejected_reason``), in the returned dict (``"rejected"``) and in a warning (the CLI prints a line). Its
arrays stay in ``.batches/`` for inspection, and the file names of the others do not shift (crystal i is always
``crystal_i``), so a resumed run is unchanged. (Issue 24: a CIF with three Co atoms 0.0001 Å apart was written and
then could not be read back by pymatgen.)

Every file is written to a temporary name and renamed into place (``os.replace`` is atomic), so an
interrupted run leaves whole files only. :func:`prepare_out_dir` refuses a non-empty folder unless the
caller asks to overwrite it (it is cleared) or to resume it (finished batches are kept and not redone).

One run at a time per folder: a run holds :class:`RunLock` (``out/.lock``, ``fcntl.flock``) from before the folder
is cleared or read until its last file is written; a second run into the same folder is refused with the first
one's pid. The kernel drops the lock when its process ends (a killed run can be resumed at once; the stale file is
not counted as content); a run that ends normally removes the file.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import socket
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; runs into one folder are then not guarded (RunLock says so once)
    fcntl = None

from mattergen_kit.data import CrystalBatch
from mattergen_kit.data.paths import sha256_file
from mattergen_kit.data.structural import structural_validity
from mattergen_kit.sampling.few_step import choose_sampler, sampler_steps
from mattergen_kit.sampling.request import SamplingRequest, resolve_guidance_scale

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "mattergen_kit.generation_run"
MANIFEST_VERSION = 1
BATCH_DIR = ".batches"
EXTXYZ = "generated_crystals.extxyz"
CIF_ZIP = "generated_crystals_cif.zip"
LOCK = ".lock"


MIN_VOLUME_PER_ATOM = 3.0  # Å³/atom: the densest crystals at ambient pressure have ~5.7 (diamond; the bundled train
#                            split's minimum is 5.77), and even a few hundred GPa compresses solids only to ~3
MAX_VOLUME_PER_ATOM = 500.0  # Å³/atom: a cube of 7.9 Å per atom, a gas (the train split's maximum is 118)


class OutputError(ValueError):
    """The output folder cannot be used as asked (not a folder, not writable, not empty, foreign manifest)."""


class RejectedCrystalWarning(UserWarning):
    """Some sampled crystals failed the kit's own validity check and were not written as crystals."""


# ------------------------------------------------------------------------------------------ atomic files
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------ one run per folder
def _busy(out: Path, holder: bytes) -> OutputError:
    who = holder.decode("utf-8", "replace").strip() or "a process that is just starting"
    return OutputError(f"output folder {out} is in use by another run ({who}); wait for it to finish or give "
                       "another --out (two runs into one folder would overwrite each other's crystals)")


class RunLock:
    """``with RunLock(out):`` holds ``out/.lock`` exclusively (``fcntl.flock``; the folder is created) or raises
    :class:`OutputError` naming the holder (its pid, host and start time are written into the file)."""

    def __init__(self, out: str | Path):
        self.out, self.fd = Path(out), None

    def __enter__(self) -> "RunLock":
        if fcntl is None:
            return self
        path = self.out / LOCK
        for _ in range(3):
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write to output folder {self.out}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # BlockingIOError: another run holds it
                holder = os.read(fd, 300)
                os.close(fd)
                raise _busy(self.out, holder) from None
            try:  # the file we locked is still the one at the path (a finishing run unlinks it: then take the new one)
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise OutputError(f"output folder {self.out}: could not take {LOCK} (runs starting and finishing there "
                              "at the same moment); try again")
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:  # unlink first, then unlock: a waiter that got the old file sees it is gone
            try:
                os.unlink(self.out / LOCK)
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def check_not_in_use(out: Path) -> None:
    """:class:`OutputError` if a run holds ``out/.lock`` now (a shared probe lock, released at once)."""
    if fcntl is None or not (out / LOCK).is_file():
        return
    try:
        fd = os.open(out / LOCK, os.O_RDONLY)
    except OSError:
        return  # unreadable: RunLock will say so when the run starts
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        raise _busy(out, os.read(fd, 300)) from None
    finally:
        os.close(fd)


def _has_content(out: Path) -> bool:
    return any(p.name != LOCK for p in out.iterdir())


# ------------------------------------------------------------------------------------------ the folder
def _is_protected(out: Path) -> bool:
    """Folders never cleared by ``overwrite``: the filesystem root, the home folder, the working folder and
    any folder that contains it."""
    out = out.resolve()
    cwd = Path.cwd().resolve()
    return out == Path(out.anchor) or out == Path.home().resolve() or out == cwd or out in cwd.parents


def check_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False, locked: bool = False) -> Path:
    """Check an output folder without changing anything (to fail before long work); raise :class:`OutputError`.

    The rules are those of :func:`prepare_out_dir`; a folder that does not exist yet must be creatable
    (its nearest existing parent is a writable folder). A folder another run holds (:class:`RunLock`) is refused,
    unless ``locked``: the caller holds that lock itself.
    """
    if overwrite and resume:
        raise OutputError("choose either overwrite (start again) or resume (continue), not both")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} is a file, not a folder; give a folder")
    if out.is_dir() and not locked:
        check_not_in_use(out)
    if out.is_dir() and _has_content(out):
        if overwrite and _is_protected(out):
            raise OutputError(f"refusing to clear {out} (the working folder, home or one of their parents); "
                              "give a dedicated output folder")
        if resume and not (out / MANIFEST).is_file():
            raise OutputError(f"cannot resume in {out}: it has no {MANIFEST} (not a mattergen_kit run folder)")
        if not (overwrite or resume):
            raise OutputError(f"output folder {out} is not empty; pass --overwrite to replace its contents or "
                              "--resume to continue an interrupted run (Python: overwrite=True / resume=True)")
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create output folder {out}: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to output folder {out}: {parent} is not writable")
    return out


def prepare_out_dir(out: str | Path, *, overwrite: bool = False, resume: bool = False, locked: bool = False) -> Path:
    """Check and create an output folder; raise :class:`OutputError` with the reason.

    A folder that is not empty is refused unless ``overwrite`` (its contents are deleted) or ``resume``
    (it must hold a run manifest, or be empty) is given. The folder must be writable. ``locked``: the caller holds
    its :class:`RunLock` (otherwise a folder another run holds is refused).
    """
    out = check_out_dir(out, overwrite=overwrite, resume=resume, locked=locked)
    if overwrite and out.is_dir():
        for child in out.iterdir():
            if child.name != LOCK:  # held by this run (RunLock)
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None
    return out


# ------------------------------------------------------------------------------------------ manifest
@dataclass
class RunManifest:
    """What a run folder holds: the settings that produced it and the finished batches (start -> CIF names)."""

    settings: dict[str, Any]
    batches: dict[str, list[str]] = field(default_factory=dict)
    complete: bool = False
    rejected: dict[str, str] = field(default_factory=dict)  # CIF name -> why the crystal was not written
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def save(self, out: Path) -> None:
        atomic_write_text(Path(out) / MANIFEST, json.dumps(asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, out: Path) -> "RunManifest":
        path = Path(out) / MANIFEST
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OutputError(f"{path} is not a readable run manifest ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
            raise OutputError(f"{path} is not a mattergen_kit run manifest")
        if d.get("version") != MANIFEST_VERSION:
            raise OutputError(f"{path} has manifest version {d.get('version')}; this mattergen_kit reads "
                              f"version {MANIFEST_VERSION}")
        return cls(settings=d["settings"], batches=d.get("batches", {}), complete=bool(d.get("complete")),
                   rejected=d.get("rejected") or {})

    def written_names(self, names: list[str]) -> list[str]:
        """``names`` without the rejected crystals (the CIFs that exist)."""
        return [n for n in names if n not in self.rejected]


def cif_names(num: int, prefix: str = "crystal") -> list[str]:
    """File names of ``num`` crystals: ``crystal_0000.cif`` ... (at least 4 digits, sorted = generation order)."""
    width = max(4, len(str(num - 1)))
    return [f"{prefix}_{i:0{width}d}.cif" for i in range(num)]


def _batch_path(out: Path, start: int) -> Path:
    return Path(out) / BATCH_DIR / f"batch_{start:06d}.npz"


def structural_problem(structure) -> str:
    """Why ``structure`` is not a crystal (``""`` if it is): the kit's structural validity rule
    (:func:`mattergen_kit.data.structural.structural_validity`, the evaluator's too: a finite, ordered cell,
    V ≥ 0.1 Å³, no lattice vector > 1000 Å, no two atoms — or an atom and its own periodic image — closer than 0.5 Å)."""
    return structural_validity(structure)[1]


def crystal_cif(structure) -> tuple[str | None, str]:
    """``(cif_text, "")`` for a crystal the kit writes, ``(None, reason)`` for one it rejects (module doc): it has a
    :func:`structural_problem` (atoms < 0.5 Å apart, a degenerate or exploded cell), its volume per atom is outside
    [MIN_VOLUME_PER_ATOM, MAX_VOLUME_PER_ATOM], or its CIF does not read back through pymatgen as the same crystal
    (pymatgen merges sites closer than its site tolerance, 1e-4 Å, or finds no structure at all)."""
    from pymatgen.io.cif import CifParser, CifWriter

    reason = structural_problem(structure)
    if reason:
        return None, reason
    per_atom = structure.volume / len(structure)
    if not MIN_VOLUME_PER_ATOM <= per_atom <= MAX_VOLUME_PER_ATOM:
        return None, (f"{per_atom:.3g} Å³/atom, outside the physical range {MIN_VOLUME_PER_ATOM:g}-"
                      f"{MAX_VOLUME_PER_ATOM:g} Å³/atom")
    text = str(CifWriter(structure))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = CifParser.from_str(text).parse_structures(primitive=False)
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means the same: not a usable file
        return None, f"its CIF does not read back through pymatgen ({type(exc).__name__}: {exc})"
    if len(back) != 1 or len(back[0]) != len(structure) or \
            sorted(map(str, back[0].species)) != sorted(map(str, structure.species)):
        return None, (f"its CIF reads back through pymatgen as {len(back[0]) if back else 0} sites, not "
                      f"{len(structure)}")
    return text, ""


def write_batch(out: Path, manifest: RunManifest, start: int, batch, names: list[str]) -> None:
    """Write one finished batch (its exact arrays, the CIFs of its crystals that :func:`crystal_cif` accepts), then
    record it in the manifest (the batch's names, and the rejected ones with their reasons)."""
    out = Path(out)
    (out / BATCH_DIR).mkdir(exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, atom_types=batch.atom_types.cpu().numpy(), frac_coords=batch.frac_coords.cpu().numpy(),
             lattice=batch.lattice.cpu().numpy(), num_atoms=batch.num_atoms.cpu().numpy())
    atomic_write_bytes(_batch_path(out, start), buf.getvalue())
    for name, s in zip(names, batch.to_structures()):
        text, reason = crystal_cif(s)
        if text is None:
            manifest.rejected[name] = reason
            (out / name).unlink(missing_ok=True)  # a stale file of that name is not this run's crystal
        else:
            manifest.rejected.pop(name, None)
            atomic_write_text(out / name, text)
    manifest.batches[str(start)] = list(names)
    manifest.save(out)


def _read_batch(path: Path) -> CrystalBatch:
    with np.load(path, allow_pickle=False) as z:
        return CrystalBatch(atom_types=torch.from_numpy(z["atom_types"]), frac_coords=torch.from_numpy(z["frac_coords"]),
                            lattice=torch.from_numpy(z["lattice"]), num_atoms=torch.from_numpy(z["num_atoms"]))


def intact_batches(out: Path, manifest: RunManifest) -> set[int]:
    """The starts of the recorded batches a resumed run can keep: the arrays load, hold as many crystals as the
    batch has names, and every CIF of the batch is there. A damaged batch (torn or deleted file, a CIF removed by
    hand) is dropped from the manifest with a warning and sampled again: its seed is fixed, so it comes out the same.
    """
    keep = set()
    for key, names in list(manifest.batches.items()):
        start, problem = int(key), None
        try:
            batch = _read_batch(_batch_path(out, start))
            if batch.num_crystals != len(names):
                problem = f"{batch.num_crystals} crystals in its arrays, {len(names)} names"
        except Exception as exc:  # noqa: BLE001 - any unreadable batch file means the same: sample it again
            problem = f"{_batch_path(out, start).name} unreadable ({type(exc).__name__})"
        missing = [n for n in manifest.written_names(names) if not (out / n).is_file()]
        if problem is None and missing:
            problem = f"{missing[0]} is missing"
        if problem is None:
            keep.add(start)
        else:
            warnings.warn(f"{out}: batch {start} ({problem}) is sampled again")
            del manifest.batches[key]
    return keep


def read_batches(out: Path, manifest: RunManifest):
    """All finished batches of a run folder, in order, as one :class:`CrystalBatch`."""
    return CrystalBatch.collate([_read_batch(_batch_path(out, start)) for start in sorted(int(k) for k in manifest.batches)])


# ------------------------------------------------------------------------------------------ collections
def extxyz_text(structures: list, names: list[str]) -> str:
    """All structures as one extxyz text (one frame each, ``file=<name>`` in the frame info)."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = []
    for name, s in zip(names, structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.info = {"file": name}
        frames.append(atoms)
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    return buf.getvalue()


def cif_zip_bytes(out: Path, names: list[str]) -> bytes:
    """A zip of the named CIFs of ``out`` (fixed timestamps, so the same CIFs give the same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (Path(out) / name).read_bytes())
    return buf.getvalue()


def write_collection(out: Path, structures: list, names: list[str], picture: bool = True,
                     rejected: dict[str, str] | None = None) -> dict:
    """``summary.csv``, ``generated_crystals.extxyz``, ``generated_crystals_cif.zip`` (and ``grid.png``).

    ``names``: the run's file names in generation order (:func:`cif_names`: ``names[i]`` is crystal i).
    ``rejected`` (name -> reason): crystals that were not written (:func:`crystal_cif`); they are rows of
    ``summary.csv`` (``written`` False, ``rejected_reason``) and nothing else. Returns the written paths and
    ``"rejected"``."""
    import pandas as pd

    out = Path(out)
    rejected = dict(rejected or {})
    rows = [{"file": n, "formula": s.composition.reduced_formula, "num_atoms": len(s), "volume": round(s.volume, 3),
             "density_g_cm3": round(float(s.density), 4), "written": n not in rejected,
             "rejected_reason": rejected.get(n, "")} for n, s in zip(names, structures)]
    atomic_write_text(out / "summary.csv", pd.DataFrame(rows).to_csv(index=False))
    kept = [(i, n, s) for i, (n, s) in enumerate(zip(names, structures)) if n not in rejected]
    names, structures = [n for _, n, _ in kept], [s for _, _, s in kept]
    atomic_write_text(out / EXTXYZ, extxyz_text(structures, names))
    atomic_write_bytes(out / CIF_ZIP, cif_zip_bytes(out, names))
    written = {"cifs": [out / n for n in names], "summary": out / "summary.csv", "extxyz": out / EXTXYZ,
               "cif_zip": out / CIF_ZIP, "rejected": rejected}
    if picture and structures:  # every crystal rejected: nothing to draw (the rejected line says why)
        from mattergen_kit.render import structure_grid

        shown = kept[:64]
        tmp = out / f".grid.tmp{os.getpid()}.png"
        # each picture titled with its crystal's number (crystal_0025.cif -> 25), which a rejected crystal leaves out
        structure_grid([s for _, _, s in shown], titles=[f"{i}: {s.composition.reduced_formula}" for i, _, s in shown],
                       path=tmp)
        os.replace(tmp, out / "grid.png")
        written["picture"] = out / "grid.png"
    return written


def _only_earlier_output(out: Path) -> bool:
    """True when ``out`` holds nothing but the files an earlier run recorded in its manifest."""
    try:
        manifest = RunManifest.load(out)
    except OutputError:
        return False
    known = {MANIFEST, BATCH_DIR, "summary.csv", EXTXYZ, CIF_ZIP, "grid.png", LOCK}
    for names in manifest.batches.values():
        known.update(names)
    return all(p.name in known for p in out.iterdir())


def write_samples(structures: list, out_dir: str | Path, picture: bool = True, prefix: str = "crystal",
                  overwrite: bool = False) -> dict:
    """Write one CIF per crystal, ``summary.csv``, MatterGen's ``generated_crystals.extxyz`` and
    ``generated_crystals_cif.zip``, ``manifest.json`` and (optionally) ``grid.png`` into ``out_dir``.

    A folder holding only the output of an earlier ``write_samples``/generate run is replaced as a whole
    (never mixed); a folder holding anything else is refused unless ``overwrite=True`` (it is cleared). A structure
    :func:`crystal_cif` rejects is not written (its name and reason in the manifest, summary.csv, ``"rejected"`` and
    a warning), as in a generation run.
    """
    out = Path(out_dir)
    if out.is_dir() and _has_content(out) and not overwrite and _only_earlier_output(out):
        overwrite = True
    check_out_dir(out, overwrite=overwrite)
    with RunLock(out):
        out = prepare_out_dir(out, overwrite=overwrite, locked=True)
        names = cif_names(len(structures), prefix)
        rejected = {}
        for name, s in zip(names, structures):
            text, reason = crystal_cif(s)
            if text is None:
                rejected[name] = reason
            else:
                atomic_write_text(out / name, text)
        written = write_collection(out, structures, names, picture=picture, rejected=rejected)
        RunManifest(settings={"source": "write_samples", "num": len(structures), "prefix": prefix},
                    batches={"0": names}, complete=True, rejected=rejected).save(out)
    if rejected:
        warnings.warn(rejected_message(rejected, len(names)), RejectedCrystalWarning, stacklevel=2)
    return written


# ------------------------------------------------------------------------------------------ a run
def generate_to_folder(model, out: str | Path, num: SamplingRequest | int, *, overwrite: bool = False,
                       resume: bool = False, picture: bool = True, prefix: str = "crystal", on_batch=None,
                       **request_fields) -> dict:
    """Generate ``num`` crystals into ``out``, writing each batch as soon as it is sampled.

    ``num``: a :class:`SamplingRequest` or the number of crystals with the request's fields as keywords (seed,
    steps, batch_size, conditions, guidance_scale, ...). ``resume=True`` continues an interrupted run in ``out``
    (same request required; finished batches are not redone and the result is identical to an uninterrupted
    run). ``on_batch(start, stop, num)`` is called after each batch is written. Returns the written paths (see
    :func:`write_collection`) plus ``"manifest"`` and ``"seed"`` (the seed used: a fresh one is drawn and recorded
    when ``seed`` is None).
    """
    request = SamplingRequest.from_kwargs(num, **request_fields)
    check_out_dir(out, overwrite=overwrite, resume=resume)  # before anything changes
    with RunLock(out):  # one run per folder, from before it is cleared until its last file is written
        run = Run.open(model, out, request, prefix, overwrite=overwrite, resume=resume)
        for part in model.iter_batches(run.resolved, skip=run.done):
            run.write(part.start, part.batch, on_batch)
        return run.finish(picture)


@dataclass
class Run:
    """One generation run in its (locked) folder: the completed request, resolved once, its manifest, the CIF names
    and the batches already written. :func:`generate_to_folder` and the Dask fan-out
    (``cluster.generate_on_cluster``) share it, so both write the same folder the same way."""

    out: Path
    request: SamplingRequest
    resolved: Any
    manifest: "RunManifest"
    names: list
    done: set

    @classmethod
    def open(cls, model, out, request: SamplingRequest, prefix: str, overwrite: bool, resume: bool) -> "Run":
        """Prepare ``out`` (cleared or resumed), fill in and resolve the request, check it against an interrupted
        run's and save the manifest at once (a run that dies before its first batch can be resumed)."""
        out = prepare_out_dir(out, overwrite=overwrite, resume=resume, locked=True)
        previous = RunManifest.load(out) if (out / MANIFEST).is_file() else None
        request = complete_request(model, request, previous)
        resolved = request.resolve(model)  # checked once, before anything is written
        settings = run_settings(model, request, prefix)
        check_resumable(out, previous, settings)
        manifest = previous or RunManifest(settings=settings)
        done = intact_batches(out, manifest)
        manifest.save(out)
        return cls(out, request, resolved, manifest, cif_names(request.num, prefix), done)

    def write(self, start: int, batch, on_batch=None) -> None:
        stop = start + batch.num_crystals
        write_batch(self.out, self.manifest, start, batch, self.names[start:stop])
        if on_batch is not None:
            on_batch(start, stop, self.request.num)

    def finish(self, picture: bool) -> dict:
        """The collection files from the written batches; the manifest marked complete."""
        structures = read_batches(self.out, self.manifest).to_structures()
        rejected = {n: r for n, r in self.manifest.rejected.items() if n in self.names}
        written = write_collection(self.out, structures, self.names, picture=picture, rejected=rejected)
        self.manifest.complete = True
        self.manifest.save(self.out)
        if rejected:
            warnings.warn(rejected_message(rejected, len(self.names)), RejectedCrystalWarning, stacklevel=2)
        return {**written, "manifest": self.out / MANIFEST, "seed": self.request.seed,
                "resumed_batches": sorted(self.done)}


def rejected_message(rejected: dict[str, str], num: int) -> str:
    """One line: how many of ``num`` crystals were not written as crystals, and why (the first few)."""
    shown = "; ".join(f"{Path(n).stem}: {r}" for n, r in list(rejected.items())[:3])
    more = f"; and {len(rejected) - 3} more" if len(rejected) > 3 else ""
    return (f"{len(rejected)} of {num} sampled crystals failed the kit's validity check and were not written as "
            f"crystals ({shown}{more}); see 'rejected' in manifest.json and summary.csv, their arrays are in "
            f"{BATCH_DIR}/")


def complete_request(model, request: SamplingRequest, previous: "RunManifest | None") -> SamplingRequest:
    """The request with the values a run must record filled in: the seed (the interrupted run's, else a fresh one),
    the number of steps (the model's recommended number when not given) and γ (by the request's guidance rule)."""
    seed = request.seed
    if seed is None:
        seed = int(previous.settings["seed"]) if previous is not None else int.from_bytes(os.urandom(7), "little")
    sampler = choose_sampler(request.sampler, request.steps, model.meta)
    steps = sampler_steps(sampler, request.steps, model.meta)      # FAST_STEPS for the few-step default
    return replace(request, seed=seed, steps=steps, sampler=sampler,
                   guidance_scale=resolve_guidance_scale(request.guidance_scale, request.conditions))


def check_resumable(out: Path, previous: "RunManifest | None", settings: dict) -> None:
    """An interrupted run continues only with the request it was started with (``OutputError`` naming the
    differences)."""
    if previous is None:
        return
    diff = sorted(k for k in set(settings) | set(previous.settings) if settings.get(k) != previous.settings.get(k))
    if diff:
        raise OutputError(f"cannot resume in {out}: settings differ from the interrupted run ("
                          + ", ".join(f"{k}: {previous.settings.get(k)!r} then, {settings.get(k)!r} now"
                                      for k in diff[:4]) + ")")


def run_settings(model, request: SamplingRequest, prefix: str = "crystal") -> dict:
    """The JSON form of everything that decides a run's crystals (the manifest's settings, compared on resume):
    the model file and its digest, the file-name prefix and ``request.to_dict()``."""
    path = getattr(model, "path", None)
    digest = sha256_file(path)[:16] if path is not None else None  # in chunks: a MatterGen checkpoint is 0.5 GB
    request = replace(request, guidance_scale=resolve_guidance_scale(request.guidance_scale, request.conditions),
                      sampler=choose_sampler(request.sampler, request.steps, getattr(model, "meta", {})))
    return {"model": Path(path).name if path else None, "model_sha256": digest, "prefix": prefix,
            **request.to_dict()}
