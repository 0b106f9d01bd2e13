"""What ``relax.py`` (one structure at a time) and ``relax_batched.py`` (many per potential call) share: loading a
potential (memoised per process), the thread limits, the empty result record, the allocator setting and the
generated → relaxed RMSD (definitions in :mod:`.relax`'s docstring)."""

from __future__ import annotations

import os

import numpy as np
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from threadpoolctl import threadpool_limits

__all__ = ["load_potential", "empty_result", "keep_freed_memory", "rmsd_angstrom", "CHGNET_MAX_Z", "SEVENNET_VARIANT",
           "limit_threads"]


class limit_threads:
    """Limit BLAS to one thread and torch to ``n`` threads (None: leave torch alone) inside the block."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self._limits = threadpool_limits(limits=1, user_api="blas")
        self._old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self._old)
        self._limits.restore_original_limits()
        return False


_POTENTIALS: dict = {}
# model="sevennet" is SevenNet-0 (``7net-0``, sevenn's bundled 11Jul2024 weights; Matbench Discovery F1 0.724 on
# unique prototypes). 7net-l3i5 (F1 0.760) costs 2.3x its CPU time per single point on this CPU (1.8x wall time per
# relaxation), see docs/evaluation_potentials.md. The variant is not part of ``structure_key``: after changing it,
# delete stored model="sevennet" results (relaxed.jsonl) or they are reused as if computed with the new one.
SEVENNET_VARIANT = "7net-0"


def load_potential(model: str = "chgnet", device: str | None = None):
    """The relaxer for ``model`` (memoised per process): CHGNet ``StructOptimizer`` or a SevenNet ASE calculator."""
    key = (model, device)
    if key in _POTENTIALS:
        return _POTENTIALS[key]
    if model == "chgnet":
        from chgnet.model import CHGNet, StructOptimizer

        net = CHGNet.load(verbose=False)  # weights ship inside the chgnet wheel: no download
        obj = StructOptimizer(model=net, optimizer_class="FIRE", use_device=device, on_isolated_atoms="ignore")
    elif model == "sevennet":
        try:
            from sevenn.calculator import SevenNetCalculator
        except ImportError as exc:
            raise RuntimeError("model='sevennet' needs the optional SevenNet package: pip install 'mattergen_kit[sevennet]' "
                               "(or pip install sevenn). The default model='chgnet' needs nothing extra.") from exc
        obj = SevenNetCalculator(SEVENNET_VARIANT, device=device or "auto")
    else:
        raise ValueError(f"unknown relaxation model {model!r}: use 'chgnet' (default) or 'sevennet'")
    _POTENTIALS[key] = obj
    return obj


CHGNET_MAX_Z = 94  # CHGNet's composition model has one input per element up to Pu


def empty_result(index: int, key: str) -> dict:
    """The result record of one structure before (or without) a successful relaxation."""
    return {"index": int(index), "key": key, "ok": False, "error": "", "energy": None, "energy_per_atom": None,
            "n_steps": 0, "max_force": None, "converged": False, "relaxed": None, "rmsd": None,
            "rmsd_matched": False, "seconds": 0.0, "cpu_seconds": 0.0}


_MALLOC_TUNED: bool | None = None     # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse in this process (once; no-op elsewhere). Returns whether
    it was set.

    A potential's forward and backward pass allocate and free the same large tensors at every FIRE step. Dask's
    nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold at
    128 KiB: every such tensor is then mmap-ed and unmapped, and the kernel zeroes its pages again each step.
    Measured on 32 generated crystals with 1 thread (batched CHGNet, 40 FIRE steps; ``benchmarks/bench_worker_malloc.py``,
    idle machine): 67.8 s wall of which 22.6 s system time, 16.2M page faults with that setting; 50.0 s, 0.5 s
    system, 0.26M faults after ``mallopt(M_MMAP_THRESHOLD, 32 MiB); mallopt(M_TRIM_THRESHOLD, 256 MiB)`` (49.9 s with
    glibc's defaults). ``MATTERGEN_KIT_MALLOC_TUNING=0`` leaves the allocator alone.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:       # tried once per process (relax_one calls this for every structure)
        return _MALLOC_TUNED
    if os.environ.get("MATTERGEN_KIT_MALLOC_TUNING", "1") == "0":
        _MALLOC_TUNED = False
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 256 * 2**20))
    except (OSError, AttributeError):   # not glibc (macOS, musl without mallopt): nothing to tune
        ok = False
    _MALLOC_TUNED = ok
    return ok


def rmsd_angstrom(generated, relaxed, max_rmsd: float = 0.5) -> tuple[float, bool]:
    """``(rmsd_Å, matched)`` generated → relaxed (module docstring)."""
    sm = StructureMatcher(ltol=0.5, stol=max_rmsd, angle_tol=10, primitive_cell=True, scale=False,
                          attempt_supercell=True, allow_subset=False)
    n = len(generated)
    v = 0.5 * (generated.volume + relaxed.volume)
    try:
        res = sm.get_rms_dist(generated, relaxed)
    except Exception:
        res = None
    matched = res is not None
    r = float(res[0]) if matched else max_rmsd
    return float(r * (v / n) ** (1 / 3)), matched


_threads = limit_threads  # the name relax.py used
