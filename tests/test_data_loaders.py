"""Loaders on realistic files written from real bundled rows: CSV, CIF folder/zip/extxyz, Alexandria, ICSD,
MP-20 download (local HTTP server) and Materials Project (the real mp-api client against a local server)."""

from __future__ import annotations

import bz2
import gzip
import json
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from mattergen_kit import datasets
from mattergen_kit.data.crystal_batch import canonicalize_structure
from mattergen_kit.data.paths import DataIntegrityError, git_blob_id


@pytest.fixture(autouse=True)
def _tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))


class _Server:
    """http.server in a thread on 127.0.0.1; ``routes[path] -> callable(query) -> (status, headers, body)``."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                outer.requests.append((url.path, parse_qs(url.query)))
                fn = outer.routes.get(url.path)
                status, headers, body = fn(parse_qs(url.query)) if fn else (404, {}, b'{"detail": "not found"}')
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------------- CSV
def test_load_csv_real_rows_csv_and_gz(tmp_path, real_rows, real_structures):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    real_rows.to_csv(tmp_path / "rows.csv", index=False)
    with gzip.open(tmp_path / "rows.csv.gz", "wt") as f:
        real_rows.to_csv(f, index=False)
    a = datasets.load_csv(tmp_path / "rows.csv", workers=1, progress=False)
    b = datasets.load_csv(tmp_path / "rows.csv.gz", workers=2, progress=False)
    assert len(a) == len(real_rows) == len(b) and a.report.n_skipped == 0
    np.testing.assert_array_equal(a.atom_types, b.atom_types)
    assert list(a.properties.material_id) == list(real_rows.material_id)
    np.testing.assert_allclose(a.properties.band_gap, real_rows.band_gap)
    np.testing.assert_array_equal(a.properties.spacegroup, real_rows["spacegroup.number"])
    for s, c in zip(real_structures[:10], a.structures[:10]):
        assert StructureMatcher().fit(s, c)
        np.testing.assert_allclose(c.lattice.matrix, canonicalize_structure(s).lattice.matrix, atol=1e-6)
    # cached: same result, independent of workers
    again = datasets.load_csv(tmp_path / "rows.csv", workers=1, progress=False)
    pd.testing.assert_frame_equal(again.properties, a.properties)


def test_load_csv_filters_are_counted(tmp_path, real_rows):
    real_rows.to_csv(tmp_path / "rows.csv", index=False)
    ds = datasets.load_csv(tmp_path / "rows.csv", e_above_hull_max=0.0, max_atoms=6, cache=False, workers=1,
                           progress=False)
    expected = real_rows[(real_rows.e_above_hull <= 0.0)]
    assert ds.report.kept + ds.report.n_skipped == len(real_rows)
    assert set(ds.properties.material_id) <= set(expected.material_id)
    assert all(s.kind == "filtered" for s in ds.report.skipped)
    assert ds.report.counts()


# --------------------------------------------------------------------------------------------- CIF folder / zip
def test_load_cif_folder_zip_and_extxyz(tmp_path, real_rows, real_structures):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    folder = tmp_path / "cifs"
    (folder / "sub").mkdir(parents=True)
    for mid, cif in zip(real_rows.material_id[:5], real_rows.cif[:5]):
        (folder / "sub" / f"{mid}.cif").write_text(cif)
    write(folder / "two.extxyz", [AseAtomsAdaptor.get_atoms(s) for s in real_structures[5:7]], format="extxyz")
    ds = datasets.load_cif_folder(folder, workers=1, progress=False)
    assert len(ds) == 7 and ds.report.n_skipped == 0
    assert set(ds.properties.material_id) == set(real_rows.material_id[:5]) | {"two-0", "two-1"}
    zpath = tmp_path / "cifs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in folder.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    dz = datasets.load_cif_folder(zpath, workers=1, progress=False)
    np.testing.assert_allclose(dz.lattice, ds.lattice)
    assert list(dz.properties.material_id) == list(ds.properties.material_id)


# --------------------------------------------------------------------------------------------- Alexandria
def _alexandria_entries(real_rows, real_structures):
    entries = []
    for k, (row, s) in enumerate(zip(real_rows.itertuples(), real_structures)):
        entries.append({"@module": "pymatgen.entries.computed_entries", "@class": "ComputedStructureEntry",
                        "energy": -5.0 * len(s) - k, "correction": -0.1 * k, "entry_id": f"agm{k:09d}",
                        "structure": s.as_dict(),
                        "data": {"e_above_hull": float(row.e_above_hull), "band_gap_ind": float(row.band_gap),
                                 "band_gap_dir": float(row.band_gap) + 0.1, "total_mag": 0.5 * k,
                                 "e_form": float(row.formation_energy_per_atom), "mat_id": f"agm{k:09d}",
                                 "spg": int(getattr(row, "_9"))}})
    return entries


@pytest.mark.parametrize("suffix", [".json", ".json.bz2"])
def test_load_alexandria_streams_and_filters(tmp_path, real_rows, real_structures, suffix, monkeypatch):
    from mattergen_kit.data import alexandria

    entries = _alexandria_entries(real_rows, real_structures)
    text = json.dumps({"@module": "x", "entries": entries}, indent=1)
    path = tmp_path / f"alexandria_000{suffix}"
    (path.write_bytes(bz2.compress(text.encode())) if suffix.endswith("bz2") else path.write_text(text))
    monkeypatch.setattr(alexandria, "CHUNK", 4096)  # many chunk boundaries inside entries
    ds = datasets.load_alexandria(path, max_atoms=8, e_above_hull_max=0.05, workers=1, progress=False)
    keep = [k for k, (r, s) in enumerate(zip(real_rows.itertuples(), real_structures))
            if len(s) <= 8 and r.e_above_hull <= 0.05]
    assert list(ds.properties.material_id) == [f"agm{k:09d}" for k in keep]
    assert ds.report.kept + ds.report.n_skipped == len(entries)
    assert all(s.source == path.name for s in ds.report.skipped)
    k = keep[-1]
    row = ds.properties.iloc[-1]
    assert np.isclose(row.energy_per_atom, (entries[k]["energy"] + entries[k]["correction"]) / len(real_structures[k]))
    assert np.isclose(row.magnetic_density, 0.5 * k / real_structures[k].volume)
    assert np.isclose(row.band_gap, real_rows.band_gap[k])


def test_iter_json_array_streams_without_reading_everything(tmp_path):
    from mattergen_kit.data.alexandria import iter_json_array

    class Counting:
        def __init__(self, text):
            self.text, self.pos = text, 0

        def read(self, n):
            out = self.text[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    text = json.dumps({"entries": [{"i": i, "pad": "x" * 100} for i in range(2000)]})
    stream = Counting(text)
    it = iter_json_array(stream, chunk=1000)
    assert next(it)["i"] == 0 and stream.pos < 5000
    assert [e["i"] for e in it] == list(range(1, 2000))


# --------------------------------------------------------------------------------------------- ICSD
def test_load_icsd_symmetry_disorder_duplicates(tmp_path, real_rows):
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    folder = tmp_path / "icsd"
    folder.mkdir()
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    sym_cif = str(CifWriter(nacl, symprec=0.1))
    assert "_symmetry_equiv_pos_as_xyz" in sym_cif and sym_cif.count(" Na ") < 4  # asymmetric unit only
    (folder / "a_nacl.cif").write_text("_database_code_ICSD 240598\n" + sym_cif)
    (folder / "b_nacl_dup.cif").write_text(str(CifWriter(nacl * (1, 1, 2))))
    dis = nacl.copy()
    dis.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    (folder / "c_disordered.cif").write_text(str(CifWriter(dis)))
    (folder / "d_real.cif").write_text(real_rows.cif[0])
    big = Structure.from_str(real_rows.cif[1], fmt="cif") * (3, 1, 1)
    big.translate_sites([0], [0.1, 0.0, 0.0])  # breaks the translation: the primitive cell is the supercell
    assert len(big) > 20
    (folder / "e_big.cif").write_text(str(CifWriter(big)))

    ds = datasets.load_icsd(folder, max_atoms=20, workers=1, progress=False)
    files = list(ds.properties.file)
    assert sorted(files) == ["a_nacl.cif", "d_real.cif"]
    assert ds.properties.material_id.iloc[files.index("a_nacl.cif")] == "icsd-240598"
    assert ds.num_atoms[files.index("a_nacl.cif")] == 2  # symmetry-expanded, then primitive
    reasons = {s.source: s for s in ds.report.skipped}
    assert reasons["b_nacl_dup.cif"].kind == "duplicate" and "a_nacl.cif" in reasons["b_nacl_dup.cif"].reason
    assert "partial occupancy" in reasons["c_disordered.cif"].reason
    assert "too many atoms" in reasons["e_big.cif"].reason and reasons["e_big.cif"].kind == "filtered"

    ordered = datasets.load_icsd(folder, max_atoms=20, disorder="order", workers=1, progress=False)
    assert ordered.report.notes.get("ordered partial occupancy") == 1
    row = ordered.properties[ordered.properties.file == "c_disordered.cif"]
    assert len(row) == 1 and bool(row.was_disordered.iloc[0])
    assert set(row.chemical_system.iloc[0].split("-")) == {"Cl", "K", "Na"}


def test_load_icsd_order_names_a_failed_oxidation_state_guess(tmp_path):
    """A Yb/Na mixed site (Yb3Si5-like cell, fractional composition): pymatgen cannot guess oxidation states, so
    the skip says so instead of the AttributeError the Ewald ordering raised; with oxidation states in the CIF
    the same cell is ordered."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    from mattergen_kit.data.icsd import order_disordered
    from mattergen_kit.data.parsing import StructureError

    s = Structure(Lattice.hexagonal(6.5, 4.0), [{"Yb": 0.5, "Na": 0.5}, "Si", "Si"],
                  [[0, 0, 0], [1 / 3, 2 / 3, 0.5], [2 / 3, 1 / 3, 0.5]])
    with pytest.raises(ValueError):  # the premise: pymatgen's guess fails on this composition
        s.copy().add_oxidation_state_by_guess()
    with pytest.raises(StructureError, match="no oxidation states could be guessed for Na0.5 Yb0.5 Si2") as err:
        order_disordered(s)
    assert "oxi_state" not in str(err.value) and "oxidation states in the CIF" in str(err.value)

    folder = tmp_path / "icsd"
    folder.mkdir()
    (folder / "a_yb_na_si.cif").write_text(str(CifWriter(s)))
    with_oxi = s.copy()
    with_oxi.add_oxidation_state_by_element({"Yb": 3, "Na": 1, "Si": -1})
    (folder / "b_yb_na_si_oxi.cif").write_text(str(CifWriter(with_oxi)))
    ds = datasets.load_icsd(folder, max_atoms=20, disorder="order", workers=1, progress=False)
    reasons = {sk.source: sk.reason for sk in ds.report.skipped}
    assert set(reasons) == {"a_yb_na_si.cif"}
    assert "no oxidation states could be guessed" in reasons["a_yb_na_si.cif"]
    assert "Element has no attribute" not in reasons["a_yb_na_si.cif"]
    assert list(ds.properties.file) == ["b_yb_na_si_oxi.cif"] and bool(ds.properties.was_disordered.iloc[0])
    assert set(ds.properties.chemical_system.iloc[0].split("-")) == {"Na", "Si", "Yb"}


# --------------------------------------------------------------------------------------------- MP-20 download
def test_fetch_mp20_verifies_blob_ids(tmp_path, real_rows, monkeypatch):
    from mattergen_kit.data import mp20

    good = real_rows.head(12).to_csv(index=False).encode()
    src = tmp_path / "src.csv"
    src.write_bytes(good)
    blob = git_blob_id(src)
    monkeypatch.setitem(mp20.MP20_BLOB_IDS, "train", blob)
    state = {"body": good, "length": None}
    server = _Server({"/mp_20/train.csv": lambda q: (200, {"Content-Length": state["length"] or
                                                             str(len(state["body"]))}, state["body"])})
    root = tmp_path / "mp20"
    try:
        with pytest.raises(FileNotFoundError, match="fetch-data mp20"):
            datasets.load_mp20("train", root=root)
        # a corrupted file is rejected and nothing stays
        state["body"] = good.replace(b"mp-", b"mq-", 1)
        with pytest.raises(DataIntegrityError, match="git blob id"):
            mp20.fetch_mp20(root, base_url=server.url + "mp_20", splits=["train"])
        assert not root.exists() or not any(root.iterdir())
        # a partial download (connection closes early) is rejected too
        state["body"], state["length"] = good[:100], str(len(good))
        with pytest.raises(DataIntegrityError):
            mp20.fetch_mp20(root, base_url=server.url + "mp_20", splits=["train"])
        assert not root.exists() or not any(root.iterdir())
        state["body"], state["length"] = good, None
        paths = mp20.fetch_mp20(root, base_url=server.url + "mp_20", splits=["train"])
        assert paths["train"].read_bytes() == good and [p.name for p in root.iterdir()] == ["train.csv"]
        ds = datasets.load_mp20("train", root=root, progress=False)
        assert list(ds.properties.material_id) == list(real_rows.material_id[:12])
        # a file changed on disk is refused
        paths["train"].write_bytes(good + b"\n")
        with pytest.raises(DataIntegrityError, match="corrupt or different"):
            datasets.load_mp20("train", root=root)
        paths["train"].unlink()
        ds2 = datasets.load_mp20("train", root=root, download=True, base_url=server.url + "mp_20", progress=False)
        assert len(ds2) == 12
    finally:
        server.close()


# --------------------------------------------------------------------------------------------- Materials Project
def _mp_docs(real_rows, real_structures):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    docs = []
    for k, (row, s) in enumerate(zip(real_rows.itertuples(), real_structures)):
        sga = SpacegroupAnalyzer(s, symprec=0.1)
        docs.append({"material_id": row.material_id, "structure": s.as_dict(), "formula_pretty": row.pretty_formula,
                     "nsites": len(s), "band_gap": float(row.band_gap),
                     "formation_energy_per_atom": float(row.formation_energy_per_atom),
                     "energy_above_hull": float(row.e_above_hull), "total_magnetization": 0.25 * k,
                     "total_magnetization_normalized_vol": 0.25 * k / s.volume,
                     "bulk_modulus": {"voigt": 100.0 + k, "reuss": 90.0 + k, "vrh": 95.0 + k} if k % 2 else None,
                     "symmetry": {"number": sga.get_space_group_number(), "symbol": sga.get_space_group_symbol(),
                                  "crystal_system": sga.get_crystal_system().capitalize()}})
    return docs


def _summary_route(docs):
    def route(q):
        sel = docs
        if "elements" in q:
            want = set(q["elements"][0].split(","))
            sel = [d for d in sel if want <= {sp["element"] for site in d["structure"]["sites"]
                                               for sp in site["species"]}]
        if "nsites_max" in q:
            sel = [d for d in sel if d["nsites"] <= int(q["nsites_max"][0])]
        if "nsites_min" in q:
            sel = [d for d in sel if d["nsites"] >= int(q["nsites_min"][0])]
        if "energy_above_hull_max" in q:
            sel = [d for d in sel if d["energy_above_hull"] <= float(q["energy_above_hull_max"][0])]
        fields = q.get("_fields", [""])[0].split(",")
        sel = [{k: v for k, v in d.items() if k in fields} for d in sel]
        skip, limit = int(q.get("_skip", ["0"])[0]), int(q.get("_limit", ["1000"])[0])
        body = {"data": sel[skip:skip + limit], "meta": {"total_doc": len(sel), "max_limit": 1000}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
    return route


def test_materials_project_real_client_against_local_server(tmp_path, real_rows, real_structures, monkeypatch):
    docs = _mp_docs(real_rows, real_structures)
    hb = json.dumps({"db_version": "2025.09.25", "access_controlled_batch_ids": [], "version": "0.87.3"}).encode()
    server = _Server({"/heartbeat": lambda q: (200, {"Content-Type": "application/json"}, hb),
                      "/materials/summary/": _summary_route(docs)})
    monkeypatch.delenv("MP_API_KEY", raising=False)
    try:
        with pytest.raises(datasets.MPAccessError if hasattr(datasets, "MPAccessError") else RuntimeError,
                           match="API key"):
            datasets.load_materials_project(elements=["Mg"], endpoint=server.url)
        ds = datasets.load_materials_project(elements=["Mg"], num_sites=(1, 8), energy_above_hull=(0, 0.05),
                                             api_key="k" * 32, endpoint=server.url, workers=1, progress=False)
        assert any(p == "/materials/summary/" for p, _ in server.requests)
        expected = [d for d, s, r in zip(docs, real_structures, real_rows.itertuples())
                    if "Mg" in r.elements and len(s) <= 8 and r.e_above_hull <= 0.05]
        assert expected and list(ds.properties.material_id) == [d["material_id"] for d in expected]
        for col, key in [("band_gap", "band_gap"), ("e_above_hull", "energy_above_hull"),
                         ("magnetic_density", "total_magnetization_normalized_vol")]:
            np.testing.assert_allclose(ds.properties[col], [d[key] for d in expected])
        bm = [d["bulk_modulus"]["vrh"] if d["bulk_modulus"] else np.nan for d in expected]
        np.testing.assert_allclose(ds.properties.bulk_modulus_vrh, bm)
        np.testing.assert_array_equal(ds.properties.spacegroup, [d["symmetry"]["number"] for d in expected])
    finally:
        server.close()
    # offline re-run: served from the disk cache, no server and no key needed
    again = datasets.load_materials_project(elements=["Mg"], num_sites=(1, 8), energy_above_hull=(0, 0.05),
                                            endpoint=server.url, workers=1, progress=False)
    pd.testing.assert_frame_equal(again.properties, ds.properties)


def test_materials_project_unreachable_fails_fast(monkeypatch):
    from mattergen_kit.data.materials_project import MPAccessError

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(MPAccessError, match="cannot reach"):
        datasets.load_materials_project(elements=["Si"], api_key="k" * 32, endpoint=f"http://127.0.0.1:{port}/",
                                        timeout=2)
    assert time.perf_counter() - t0 < 5
    # a server that accepts connections but never answers: the start-up guard stops waiting
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    try:
        t0 = time.perf_counter()
        with pytest.raises(MPAccessError, match="did not answer"):
            datasets.load_materials_project(elements=["Si"], api_key="k" * 32,
                                            endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=1.5)
        assert time.perf_counter() - t0 < 5
    finally:
        silent.close()
