"""Fan-out of relaxations over a Dask distributed cluster (``evaluate(..., cluster=...)``,
``mattergen-kit evaluate --dask-scheduler ADDRESS``).

``cluster`` may be

* a scheduler address, ``"tcp://host:8786"`` (what ``dask scheduler`` prints), or ``"host:8786"``;
* a ``distributed.Client`` (left open: it is yours);
* a cluster object with a ``scheduler_address`` (``distributed.LocalCluster``, dask-jobqueue's ``SLURMCluster``,
  dask-kubernetes' ``KubeCluster`` ...).

How results stay exactly those of a local run
--------------------------------------------
* one Dask task per chunk of structures (CHGNet, ``batch_size > 1``, the default: ``relax_chunk``, a batched
  relaxation of up to ``batch_size`` structures; see :func:`~mattergen_kit.evaluation.relax.chunk_size`) or per
  structure (``batch_size=1``: ``relax_one``) — the same functions a local run calls; each worker process loads the
  potential once and keeps it (:func:`~mattergen_kit.evaluation.relax.load_potential`);
* only this (client) process writes ``relaxed.jsonl``: results are appended as their tasks finish
  (``distributed.as_completed``), each future yields once, so a structure is written once;
* a worker that dies takes its running tasks with it; the scheduler hands them to another worker (Dask retries a
  task whose worker died up to ``distributed.scheduler.allowed-failures`` times, default 3), so nothing is lost. If
  a task exhausts those retries (it keeps killing workers, e.g. out of memory) the run stops with an error, and the
  finished results are already in ``relaxed.jsonl``: re-running resumes;
* ``relax_one`` and ``relax_chunk`` never raise for a bad structure (it is a result with ``ok=False``), so a task
  error means the cluster, not the structure, failed.

Workers need the same installation as the client (``pip install 'mattergen_kit[eval,cluster]'``, same versions).
Connecting (addresses, clients, cluster objects, the errors) is :func:`mattergen_kit.cluster.connect`.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Callable, Iterable, Iterator

from mattergen_kit.cluster import connect

__all__ = ["connect", "dask_map", "dask_cluster_map"]


def dask_map(client, run_id: str | None = None) -> Callable[[Callable, Iterable], Iterator]:
    """A ``map_fn(func, items)`` for :func:`~mattergen_kit.evaluation.relax.relax_structures` that runs one task
    per item on ``client``'s cluster and yields results in the order they finish.

    Task keys are ``relax-<index>-<structure key>-<run id>`` (a chunk: ``relax-chunk<index>x<n>-<run id>``; other
    functions' chunks, e.g. the evaluator's fingerprints: ``structure_fingerprint_chunk-chunk<index>x<n>-<run id>``),
    visible in the dashboard and in ``client.processing()``; the run id keeps two runs over the same structures
    apart.
    """
    from distributed import as_completed

    run_id = run_id or uuid.uuid4().hex[:8]

    def map_fn(func: Callable, items: Iterable) -> Iterator:
        items = list(items)
        name = getattr(getattr(func, "func", func), "__name__", "task")    # functools.partial: its function
        prefix = "relax" if "relax" in name else name.strip("_")
        futures = [client.submit(func, it, key=f"{prefix}-{_label(it)}-{run_id}", pure=False) for it in items]
        try:
            for fut in as_completed(futures, loop=client.loop):
                try:
                    yield fut.result()
                except Exception as exc:  # KilledWorker and the like: the cluster failed, not the structure
                    raise RuntimeError(
                        f"a relaxation task failed on the Dask cluster ({type(exc).__name__}: {str(exc)[:300]}); "
                        "finished results are kept in relaxed.jsonl: re-run the same command to resume") from exc
                finally:
                    fut.release()
        finally:
            client.cancel([f for f in futures if not f.done()])

    return map_fn


def _label(item) -> str:
    """``<index>-<structure key>`` of one item, ``chunk<first index>x<n>`` of a chunk (``batch_size > 1``)."""
    if isinstance(item, list):
        return f"chunk{item[0][0]}x{len(item)}" if item else "chunk-empty"
    return f"{item[0]}-{item[1]}"


@contextlib.contextmanager
def dask_cluster_map(cluster: Any):
    """``with dask_cluster_map(cluster) as map_fn:`` — connect (module docstring), yield a :func:`dask_map`, and
    close the client afterwards if it was opened here."""
    client, owned = connect(cluster)
    try:
        yield dask_map(client)
    finally:
        if owned:
            client.close()
