"""Dask distributed clusters: connecting to one, and sampling crystals on one batch per task.

``cluster`` arguments (``evaluate(..., cluster=...)``, :func:`generate_on_cluster`, ``--dask-scheduler``) may be

* a scheduler address, ``"tcp://host:8786"`` (what ``dask scheduler`` prints), or ``"host:8786"``;
* a ``distributed.Client`` (left open: it is yours);
* a cluster object with a ``scheduler_address`` (``distributed.LocalCluster``, dask-jobqueue's ``SLURMCluster``,
  dask-kubernetes' ``KubeCluster`` ...).

Sampling at scale (:func:`generate_on_cluster`): the crystals of a run are sampled in batches of ``batch_size``;
batch ``start`` uses the seed ``base + start`` derived from the run's seed (``GenerativeModel.iter_batches``), so
a batch is the same whichever worker samples it and whatever else runs. One Dask task samples one batch (the
worker loads the model once and keeps it); this process writes each batch into the run folder as it arrives
(CIFs, ``.batches/`` arrays, ``manifest.json``: the layout and resume rules of ``mattergen-kit generate``), so the
folder is identical to a one-machine run with the same seed and ``batch_size``, and an interrupted run resumes.
Relaxations on a cluster: :mod:`mattergen_kit.evaluation.cluster`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any

import torch

from mattergen_kit.data import CrystalBatch
from mattergen_kit.generation import load_model
import mattergen_kit.mattergen_models  # noqa: F401  (workers load MatterGen's released models too)
from mattergen_kit.outputs import Run, RunLock, check_out_dir
from mattergen_kit.sampling.request import SamplingRequest

__all__ = ["connect", "generate_on_cluster"]

CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 60.0


def _client_class():
    try:
        from distributed import Client
    except ImportError as exc:
        raise RuntimeError("cluster=... / --dask-scheduler needs Dask distributed: "
                           "pip install 'mattergen_kit[cluster]' (or pip install 'dask[distributed]')") from exc
    return Client


def _start_hint(address: str) -> str:
    return (f"start a scheduler with `dask scheduler` (it prints its address, e.g. tcp://10.0.0.5:8786) and one "
            f"`dask worker {address}` per machine, then pass that address; check the host name, the port and "
            "that no firewall blocks it")


SOCKET_SCHEMES = ("tcp", "tls", "ws", "wss")  # addresses a plain TCP connect can test
OTHER_SCHEMES = ("inproc", "ucx")


def _probe_scheduler(address: str, timeout: float) -> None:
    """ValueError for an address that is not one, ConnectionError unless a Dask scheduler is reachable there within
    ``timeout`` seconds (and, for ``tcp://``, greets).

    Checked here, before any ``distributed.Client`` exists: distributed's ``connect`` bounds the TCP connect but then
    waits for the peer's handshake without a limit (a peer that accepts and never answers hung
    ``Client(address, timeout=10)`` for ever), and a Client that failed to start printed a second traceback 20 s
    later when it was garbage-collected. A scheduler writes its handshake as soon as it accepts
    (``Listener.on_connection``): one byte within the timeout tells it is alive."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in SOCKET_SCHEMES + OTHER_SCHEMES:
        raise ValueError(f"{address!r} is not a Dask scheduler address: unknown scheme {scheme!r} (use "
                         f"tcp://host:port, e.g. tcp://10.0.0.5:8786; known: {', '.join(SOCKET_SCHEMES + OTHER_SCHEMES)})")
    if scheme not in SOCKET_SCHEMES:
        return
    try:
        host, port = parse_host_port(location, default_port=8786)
    except ValueError:
        raise ValueError(f"{address!r} is not a Dask scheduler address: {location!r} is not host:port "
                         "(e.g. tcp://10.0.0.5:8786)") from None
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if scheme != "tcp":
                return  # TLS / websockets: the peer speaks only after its own handshake
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            first = sock.recv(1)
    except TimeoutError:
        raise ConnectionError(f"the peer at {address!r} did not answer within {timeout:g} s (a Dask scheduler "
                              f"greets at once): is it a Dask scheduler? {_start_hint(address)}") from None
    except OSError as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                              f"({type(exc).__name__}: {str(exc)[:200]}): {_start_hint(address)}") from None
    if not first:
        raise ConnectionError(f"the peer at {address!r} closed the connection without a Dask handshake: is it a "
                              f"Dask scheduler? {_start_hint(address)}")


def connect(cluster: Any, timeout: float = CONNECT_TIMEOUT_S, wait_for_workers: float = WORKER_WAIT_S):
    """``(client, owned)`` for a ``cluster`` spec (module docstring); ``owned``: we opened it and must close it.

    Raises ``ConnectionError`` naming the address when the scheduler cannot be reached in ``timeout`` seconds or
    has no worker after ``wait_for_workers`` seconds, and ``TypeError`` for anything that is not a cluster spec.
    """
    Client = _client_class()
    if isinstance(cluster, Client):
        return cluster, False
    if isinstance(cluster, str):
        address = cluster.strip()
        if not address:
            raise ValueError("empty Dask scheduler address: give e.g. tcp://10.0.0.5:8786")
    elif hasattr(cluster, "scheduler_address"):
        address = cluster.scheduler_address
    else:
        raise TypeError(f"cluster must be a scheduler address ('tcp://host:8786'), a distributed.Client or a "
                        f"cluster object with .scheduler_address (LocalCluster, SLURMCluster ...), "
                        f"not {type(cluster).__name__}")
    _probe_scheduler(address, timeout)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                              f"({type(exc).__name__}: {str(exc)[:200]}): {_start_hint(address)}") from exc
    try:
        client.wait_for_workers(1, timeout=wait_for_workers)
    except (TimeoutError, OSError) as exc:
        client.close()
        raise ConnectionError(f"the Dask scheduler at {address!r} has no worker after {wait_for_workers:g} s: "
                              f"start workers with `dask worker {address}`") from exc
    return client, True



_MODELS: dict = {}
_RESOLVED: dict = {}


def _sample_batch(model_path: str | None, request: dict, start: int) -> dict:
    """Sample batch ``start`` of a run on a worker; returns its arrays (numpy) — runs in the worker process.
    The model is loaded and the request resolved once per worker process (not once per batch)."""
    if model_path not in _MODELS:
        _MODELS[model_path] = load_model(model_path)
    model = _MODELS[model_path]
    key = (model_path, json.dumps(request, sort_keys=True))
    if key not in _RESOLVED:
        _RESOLVED[key] = SamplingRequest(**request).resolve(model)
    resolved = _RESOLVED[key]
    others = set(resolved.starts()) - {start}
    (part,) = list(model.iter_batches(resolved, skip=others))
    batch = part.batch
    return {"atom_types": batch.atom_types.numpy(), "frac_coords": batch.frac_coords.numpy(),
            "lattice": batch.lattice.numpy(), "num_atoms": batch.num_atoms.numpy()}


def generate_on_cluster(cluster: Any, out: str | os.PathLike, num: SamplingRequest | int, *,
                        model: str | os.PathLike | None = None, overwrite: bool = False, resume: bool = False,
                        picture: bool = True, prefix: str = "crystal", on_batch=None, **request_fields) -> dict:
    """``generate_to_folder`` with one Dask task per batch (module docstring): same folder, same crystals.

    ``model``: a checkpoint path readable on every worker (None: the bundled model). ``num``: a
    :class:`SamplingRequest` or the number of crystals with its fields as keywords; ``seed=None`` draws one here
    and records it, so every worker samples from the same run. Returns what ``generate_to_folder`` returns.
    """
    from distributed import as_completed  # optional dependency ([cluster] extra); connect() says how to install it

    request = SamplingRequest.from_kwargs(num, **request_fields)
    model_path = str(model) if model is not None else None
    local_model = load_model(model_path)  # settings of the run (and a clear error for a bad path) before any task
    check_out_dir(out, overwrite=overwrite, resume=resume)  # changes nothing: a busy or non-empty folder fails here
    client, owned = connect(cluster)  # an unreachable scheduler fails before the output folder is touched
    with RunLock(out):  # one run per folder (outputs.RunLock), from before it is cleared to its last file
        try:
            run = Run.open(local_model, out, request, prefix, overwrite=overwrite, resume=resume)
            todo = [s for s in run.resolved.starts() if s not in run.done]
            wire = {**run.request.to_dict(), "progress": False, "threads": run.request.threads}
            run_id = uuid.uuid4().hex[:8]  # task keys of two runs never collide
            futures = [client.submit(_sample_batch, model_path, wire, s, key=f"sample-{s}-{run_id}", pure=False)
                       for s in todo]
            for fut in as_completed(futures, loop=client.loop):
                arrays = fut.result()
                run.write(todo[futures.index(fut)], CrystalBatch(**{k: torch.from_numpy(v) for k, v in arrays.items()}),
                          on_batch)
                fut.release()
        finally:
            if owned:
                client.close()
        return run.finish(picture)
