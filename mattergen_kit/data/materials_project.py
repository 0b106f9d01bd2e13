"""Materials Project loader through the official ``mp-api`` client (``mp_api.client.MPRester``).

``load_materials_project(elements=["Li", "O"], num_sites=(1, 20), energy_above_hull=(0, 0.1))`` queries
the summary endpoint (``materials/summary/``) and returns a :class:`CrystalDataset` with
``material_id``, ``band_gap`` (eV), ``formation_energy_per_atom`` and ``e_above_hull`` (eV/atom),
``total_magnetization`` (μB per cell), ``magnetic_density`` (= MP's ``total_magnetization_normalized_vol``,
μB/Å³), ``bulk_modulus_vrh`` (GPa, NaN where MP has no elastic data), ``spacegroup`` / ``spacegroup_symbol`` /
``crystal_system`` (MP's symmetry), plus the labels every loader adds (formula, chemical_system, HHI, ...).

* API key: the ``api_key`` argument or ``MP_API_KEY``; none -> :class:`MPAccessError` saying how to get one.
* Endpoint: ``endpoint`` argument, else ``MP_API_ENDPOINT``, else ``https://api.materialsproject.org/``.
* Unreachable server: the client's start-up (heartbeat) request has no timeout, so we first open a TCP
  connection to the endpoint's host (``timeout`` s) and then build the client in a thread that we stop
  waiting for after ``timeout`` s: either way an :class:`MPAccessError` within seconds.
* Cache: the raw documents of each query are saved (gzip JSON) under ``<cache>/materials_project/``, keyed
  by the endpoint and the query (not the key), so a notebook re-runs offline; ``refresh=True`` re-queries.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import threading
import warnings
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from mattergen_kit.data.dataset import CrystalDataset
from mattergen_kit.data.paths import cache_root
from mattergen_kit.data.safe_json import structure_from_dict

__all__ = ["load_materials_project", "MPAccessError", "MP_FIELDS", "DEFAULT_ENDPOINT"]

DEFAULT_ENDPOINT = "https://api.materialsproject.org/"
MP_FIELDS = ["material_id", "structure", "formula_pretty", "nsites", "band_gap", "formation_energy_per_atom",
             "energy_above_hull", "total_magnetization", "total_magnetization_normalized_vol", "bulk_modulus",
             "symmetry"]
CACHE_FORMAT = 1


class MPAccessError(RuntimeError):
    """The Materials Project cannot be queried (no key, unreachable server, API error)."""


def _endpoint(endpoint: str | None) -> str:
    ep = endpoint or os.environ.get("MP_API_ENDPOINT") or DEFAULT_ENDPOINT
    return ep if ep.endswith("/") else ep + "/"


def _probe(endpoint: str, timeout: float) -> None:
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise MPAccessError(f"invalid Materials Project endpoint {endpoint!r} (need http(s)://host[:port]/)")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        raise MPAccessError(f"cannot reach the Materials Project at {endpoint} ({type(exc).__name__}: {exc}) within "
                            f"{timeout:g} s. Check the internet connection / proxy, or reuse a cached query "
                            "(results are cached after the first successful call).") from None


def _make_rester(api_key: str, endpoint: str, timeout: float):
    from mp_api.client import MPRester

    box: dict[str, Any] = {}

    def target():
        try:
            box["rester"] = MPRester(api_key=api_key, endpoint=endpoint, use_document_model=False,
                                     mute_progress_bars=True)
        except BaseException as exc:  # noqa: BLE001 - reported in the caller's thread
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True, name="mattergen_kit-MPRester")
    th.start()
    th.join(timeout)
    if th.is_alive():
        raise MPAccessError(f"the Materials Project at {endpoint} did not answer its start-up request within "
                            f"{timeout:g} s; try again later or raise `timeout=`")
    if "error" in box:
        exc = box["error"]
        if _rejected_key(exc, endpoint, api_key):
            raise MPAccessError(f"the Materials Project at {endpoint} rejected the API key (HTTP 401/403): check "
                                "MP_API_KEY or api_key= (get a key at https://materialsproject.org/api)") from exc
        raise MPAccessError(f"could not start the Materials Project client for {endpoint}: "
                            f"{type(exc).__name__}: {exc}") from exc
    return box["rester"]


def _rejected_key(exc: BaseException, endpoint: str, api_key: str) -> bool:
    """True when the client failed because the server refused the key (mp-api shows a 401 as KeyError 'version')."""
    text = f"{type(exc).__name__}: {exc}"
    if any(k in text for k in ("401", "403", "Unauthorized", "Forbidden")):
        return True
    if not (isinstance(exc, KeyError) and exc.args == ("version",)):
        return False
    import urllib.error
    import urllib.request

    request = urllib.request.Request(endpoint + "heartbeat", headers={"x-api-key": api_key})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as http_err:
        return http_err.code in (401, 403)
    except OSError:
        return False
    return False


def _query_key(endpoint: str, criteria: dict) -> str:
    blob = json.dumps({"endpoint": endpoint, "criteria": criteria, "fields": MP_FIELDS, "v": CACHE_FORMAT},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _to_jsonable(doc) -> dict:
    if hasattr(doc, "model_dump"):
        doc = doc.model_dump(mode="json")
    out = {}
    for k, v in dict(doc).items():
        if hasattr(v, "as_dict"):
            v = v.as_dict()
        out[k] = v
    return json.loads(json.dumps(out, default=str))


def _num(v) -> float:
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def _docs_to_dataset(docs: list[dict], name: str, workers: int, progress: bool) -> CrystalDataset:
    structures, rows = [], []
    bad = []
    for i, d in enumerate(docs):
        try:
            s = structure_from_dict(d["structure"], f"MP document {i}")  # no monty class dispatch
        except Exception as exc:  # reported as a skip below
            bad.append((i, str(d.get("material_id")),
                        f"invalid structure in MP document ({type(exc).__name__}: {str(exc)[:300]})"))
            continue
        sym = d.get("symmetry") or {}
        bm = d.get("bulk_modulus") or {}
        rows.append({"material_id": str(d.get("material_id")), "band_gap": _num(d.get("band_gap")),
                     "formation_energy_per_atom": _num(d.get("formation_energy_per_atom")),
                     "e_above_hull": _num(d.get("energy_above_hull")),
                     "spacegroup": sym.get("number"),
                     "spacegroup_symbol": sym.get("symbol"), "crystal_system": str(sym.get("crystal_system") or ""),
                     "total_magnetization": _num(d.get("total_magnetization")),
                     "magnetic_density": _num(d.get("total_magnetization_normalized_vol")),
                     "bulk_modulus_vrh": _num(bm.get("vrh") if isinstance(bm, dict) else None)})
        structures.append(s)
    ds = CrystalDataset.from_structures(structures, pd.DataFrame(rows), name=name, source="materials_project",
                                        workers=workers, progress=progress)
    from mattergen_kit.data.report import Skip

    for i, mid, reason in bad:
        ds.report.skipped.append(Skip("materials_project", i, reason, "invalid", mid))
    return ds


def load_materials_project(elements: Sequence[str] | None = None, chemsys: str | Sequence[str] | None = None, *,
                           num_sites: tuple[int, int] | int | None = (1, 20),
                           energy_above_hull: tuple[float, float] | None = (0.0, 0.1),
                           material_ids: Sequence[str] | None = None, api_key: str | None = None,
                           endpoint: str | None = None, timeout: float = 10.0, cache: bool = True,
                           refresh: bool = False, workers: int = 2, progress: bool = True,
                           **criteria) -> CrystalDataset:
    """Query Materials Project summary documents and return them as a canonicalised :class:`CrystalDataset`.

    ``elements`` (materials containing all of these), ``chemsys`` (e.g. ``"Li-Fe-O"``, exactly this system),
    ``num_sites`` (min, max), ``energy_above_hull`` (min, max eV/atom) and any other
    ``MPRester.materials.summary.search`` criterion (``**criteria``) select the materials.
    """
    crit: dict[str, Any] = {k: v for k, v in {"elements": list(elements) if elements else None,
                                              "chemsys": chemsys, "num_sites": num_sites,
                                              "energy_above_hull": energy_above_hull,
                                              "material_ids": list(material_ids) if material_ids else None,
                                              **criteria}.items() if v is not None}
    if not {k for k in crit if k not in ("num_sites", "energy_above_hull")}:
        raise ValueError("give elements=, chemsys= or material_ids= (a query over all of Materials Project "
                         "downloads the whole database)")
    ep = _endpoint(endpoint)
    name = "materials_project:" + ",".join(f"{k}={v}" for k, v in sorted(crit.items()))
    cache_file = cache_root() / "materials_project" / f"{_query_key(ep, crit)}.json.gz"
    if cache and not refresh and cache_file.exists():
        try:
            with gzip.open(cache_file, "rt") as f:
                docs = json.load(f)["data"]
            if not isinstance(docs, list):
                raise TypeError("'data' is not a list")
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:  # torn or foreign: fetch it again
            warnings.warn(f"the Materials Project cache {cache_file} is unreadable ({type(exc).__name__}: "
                          f"{str(exc)[:120]}); it is deleted and the query is fetched again")
            cache_file.unlink(missing_ok=True)
        else:
            return _docs_to_dataset(docs, name, workers, progress)

    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise MPAccessError("no Materials Project API key: pass api_key=... or set the MP_API_KEY environment "
                            "variable (get a free key at https://materialsproject.org/api after logging in)")
    _probe(ep, timeout)
    rester = _make_rester(key, ep, timeout)
    try:
        docs = rester.materials.summary.search(fields=MP_FIELDS, **crit)
    except Exception as exc:
        raise MPAccessError(f"Materials Project query failed ({type(exc).__name__}: {exc})") from exc
    finally:
        try:
            rester.session.close()
        except Exception:
            pass
    docs = [_to_jsonable(d) for d in docs]
    if cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.name + f".tmp{os.getpid()}")
        with gzip.open(tmp, "wt") as f:
            json.dump({"endpoint": ep, "criteria": crit, "data": docs}, f, default=str)
        os.replace(tmp, cache_file)
    return _docs_to_dataset(docs, name, workers, progress)
