"""Evaluation never runs code from a cache, survives a torn relaxed.jsonl, reads generate/MatterGen output
folders and zips once per crystal, writes the relaxed structures, and reports CLI mistakes in one line (issue 11)."""
import json
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mattergen_kit.evaluation.cache import load_arrays
from mattergen_kit.evaluation.evaluate import load_structures
from mattergen_kit.evaluation.relax import ResultStore
from mattergen_kit.outputs import write_samples

PACKAGE = Path(__file__).resolve().parents[1] / "mattergen_kit"


class Planted:
    """Unpickling this creates the file ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_torn_last_record_is_cut_off_and_the_next_one_lands_on_its_own_line(tmp_path):
    store = tmp_path / "relaxed.jsonl"
    whole = json.dumps({"key": "a", "energy": -1.0}) + "\n"
    store.write_text(whole + '{"key": "b", "ene')  # the run was killed while writing b
    with pytest.warns(UserWarning, match=r"removed a torn last record \(17 bytes\)"):
        rs = ResultStore(store)
    assert set(rs.results) == {"a"} and store.read_text() == whole
    rs.add({"key": "c", "energy": -2.0})
    lines = store.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file reads without warnings
        assert set(ResultStore(store).results) == {"a", "c"}


def test_an_unreadable_middle_line_is_counted_not_silent(tmp_path):
    store = tmp_path / "relaxed.jsonl"
    store.write_text('{"key": "a"}\nnot json\n{"no_key": 1}\n{"key": "b"}\n')
    with pytest.warns(UserWarning, match=r"ignored 2 unreadable line"):
        assert set(ResultStore(store).results) == {"a", "b"}


def test_a_planted_pickle_in_an_npz_cache_is_rejected_not_run(tmp_path):
    sentinel = tmp_path / "ran"
    evil = tmp_path / "fp-bundled-train-3-abc.npz"
    np.savez(evil, idx=np.array([Planted(sentinel)], dtype=object))
    with pytest.warns(UserWarning, match="rebuilding the unreadable cache"):
        assert load_arrays(evil) is None
    assert not sentinel.exists()


def test_planted_cache_files_never_execute(mini_env, monkeypatch, tmp_path, real_structures, capfd):
    """Plant pickles under every cache name, old and new; the loaders rebuild, nothing runs."""
    from mattergen_kit.evaluation import distribution, reference

    cache = tmp_path / "cache"
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(cache))
    evaluation = reference.cache_dir()
    sentinel = tmp_path / "ran"
    payload = pickle.dumps(Planted(sentinel))
    from mattergen_kit.data.paths import verify_file

    d = verify_file("mp20_phases/mp20_phases.parquet")[:16]
    for name in (f"phases-{d}.pkl", f"phases-{d}.parquet", "bandgap-1-1.joblib", "chgnet-static-train-8.pkl",
                 "chgnet-static-train-8.npz"):
        (evaluation / name).write_bytes(payload)
    reference.load_phases_table.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = reference.load_phases_table()
        structures = real_structures[:3]
        first = distribution.reference_fingerprints(structures, "planted", progress=False)
        for fp in evaluation.glob("fp-planted-*.npz"):
            fp.write_bytes(payload)  # replace the fresh cache with a pickle under the same name
        again = distribution.reference_fingerprints(structures, "planted", progress=False)
    reference.load_phases_table.cache_clear()
    assert not sentinel.exists()
    err = capfd.readouterr().err  # every cache build says what it builds and where
    assert "building the MP-20 phases table (200 phases)" in err and "building reference fingerprints of 3" in err
    assert len(table) == 200 and isinstance(table["composition"].iloc[0], dict)
    assert all((a is None and b is None) or np.allclose(a, b) for a, b in zip(first["struct"], again["struct"]))
    reread = reference.load_phases_table()  # from the parquet cache it just wrote
    assert reread["composition"].tolist() == table["composition"].tolist()
    reference.load_phases_table.cache_clear()


def test_no_module_unpickles_anything():
    """Static guard: no pickle/joblib loads and no torch.load without weights_only=True in the package, with no
    exceptions (Lightning checkpoints too: tests/test_planted_files.py)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text()
        for pattern in ("pickle.load", "read_pickle", "joblib.load", "allow_pickle=True", "weights_only=False",
                        "dill.load", "cloudpickle"):
            if pattern in text:
                found.append(f"{rel}: {pattern}")
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call:
                found.append(f"{rel}: torch.load({call})")
    assert not found, found


# ------------------------------------------------------------------------------------------ inputs
def test_a_generate_folder_is_read_once_per_crystal(real_structures, tmp_path):
    out = tmp_path / "gen"
    write_samples(real_structures[:3], out, picture=False)  # CIFs + extxyz + zip + summary + manifest
    structures, names, errors = load_structures(out)
    assert names == ["crystal_0000.cif", "crystal_0001.cif", "crystal_0002.cif"] and errors == ["", "", ""]
    for s, ref in zip(structures, real_structures[:3]):
        assert s.composition == ref.composition


def test_mattergen_output_files_are_read(real_structures, tmp_path):
    gen = tmp_path / "gen"
    write_samples(real_structures[:3], gen, picture=False)
    mattergen = tmp_path / "mattergen"  # MatterGen writes only these two
    mattergen.mkdir()
    for name in ("generated_crystals.extxyz", "generated_crystals_cif.zip"):
        (mattergen / name).write_bytes((gen / name).read_bytes())
    structures, names, _ = load_structures(mattergen)
    assert names == ["crystal_0000.cif", "crystal_0001.cif", "crystal_0002.cif"]
    assert [s.composition for s in structures] == [s.composition for s in real_structures[:3]]
    structures, names, errors = load_structures(gen / "generated_crystals_cif.zip")
    assert names == ["crystal_0000.cif", "crystal_0001.cif", "crystal_0002.cif"] and errors == ["", "", ""]


def test_a_bad_member_of_a_zip_is_one_error_row(real_rows, tmp_path):
    import zipfile

    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.cif", real_rows.cif[0])
        zf.writestr("b.cif", "data_x\n_cell_length_a 5\nloop_\n_atom_site_label\n X 0.1\n")
        zf.writestr("c.cif", real_rows.cif[1])
    structures, names, errors = load_structures(path)
    assert names == ["a.cif", "b.cif", "c.cif"]
    assert structures[0] is not None and structures[1] is None and structures[2] is not None
    assert errors[1].startswith("parse error") and errors[0] == errors[2] == ""


def test_evaluate_writes_the_relaxed_structures(tmp_path):
    from mattergen_kit.evaluation import evaluate
    from mattergen_kit.evaluation.reference import bundled

    test = bundled("test")
    small = [s for s in test.structures if len(s) <= 3][:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(small, reference=None, relax=True, steps=3, out=tmp_path / "rep", distribution=False,
                          properties=False, progress=False)
    from ase.io import read

    frames = read(tmp_path / "rep" / "relaxed_crystals.extxyz", index=":")
    assert [str(f.info["file"]) for f in frames] == ["0", "1"]
    assert [f.get_chemical_formula() for f in frames] == [s.to_ase_atoms().get_chemical_formula() for s in small]
    assert np.allclose(frames[0].cell[:], report.structures[0].lattice.matrix, atol=1e-6)


# ------------------------------------------------------------------------------------------ CLI
def evaluate_cli(*args):
    return subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["out_is_file", "missing_input", "zero_steps", "negative_fmax", "cuda"])
def test_evaluate_cli_mistakes_are_one_line_errors(tmp_path, real_rows, case):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.cif").write_text(real_rows.cif[0])
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    args = {"out_is_file": [folder, "--out", a_file], "missing_input": [tmp_path / "nope", "--out", tmp_path / "o"],
            "zero_steps": [folder, "--out", tmp_path / "o", "--steps", 0],
            "negative_fmax": [folder, "--out", tmp_path / "o", "--fmax", -1],
            "cuda": [folder, "--out", tmp_path / "o", "--device", "cuda"]}[case]
    r = evaluate_cli(*args)
    expected = {"out_is_file": "is a file", "missing_input": "does not exist", "zero_steps": "--steps must be",
                "negative_fmax": "--fmax must be", "cuda": "CUDA is not available"}[case]
    assert r.returncode == 2 and expected in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_an_element_chgnet_cannot_handle_is_named(real_structures):
    from mattergen_kit.evaluation.relax import RelaxSettings, relax_one

    s = real_structures[0].copy()
    s.replace_species({s.species[0]: "Cm"})
    result = relax_one((0, "k", s.as_dict()), dict(RelaxSettings(steps=2)))
    assert not result["ok"]
    assert "CHGNet covers elements with Z <= 94" in result["error"] and "Cm cannot be relaxed" in result["error"]


def test_a_very_large_cell_is_judged_but_not_relaxed_with_the_reason(tmp_path):
    """Issue 24: a 1,000-atom CIF used to relax for ~10 minutes without a note; now it is judged (validity) and
    its row says why it was not relaxed, while a small crystal next to it is relaxed as usual."""
    from pymatgen.core import Lattice, Structure

    import mattergen_kit as mk

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big = nacl.copy()
    big.make_supercell([2, 2, 2])  # 64 atoms: over a limit of 20 here, so the test stays fast
    report = mk.evaluate([nacl.get_primitive_structure(), big], relax=True, distribution=False, properties=False,
                         band_gap=False, progress=False, max_relax_atoms=20)
    table = report.per_structure
    assert bool(table.loc[0, "relaxed"])
    assert table.loc[1, "structural_valid"] and not (table.loc[1, "relaxed"] is True)
    assert "not relaxed: 64 atoms, more than max_relax_atoms=20" in table.loc[1, "relax_error"]


# ------------------------------------------------------------------------------ issue 24: every argument of evaluate
# tools/probe_entry_points.py: each of these used to relax and report numbers computed with a value no relaxation
# can use (fmax inf, steps 0, ...), end in a library's traceback (a tpu device, a number as the input), or count a
# caller's mistake (a list of file names) as crystals that failed; now refused before any work.
API_MISTAKES = {
    "fmax negative": (dict(relax=True, fmax=-1), "fmax must be a finite number"),
    "fmax nan": (dict(relax=True, fmax=float("nan")), "fmax must be a finite number"),
    "fmax inf": (dict(relax=True, fmax=float("inf")), "fmax must be a finite number"),
    "fmax text": (dict(relax=True, fmax="0.1"), "fmax must be a finite number"),
    "steps -5": (dict(relax=True, steps=-5), "steps must be a whole number ≥ 0"),   # 0: a single point, allowed
    "steps 2.5": (dict(relax=True, steps=2.5), "steps must be a whole number ≥ 0"),
    "device tpu": (dict(relax=True, device="tpu"), "is not a device name"),
    "torch_threads 0": (dict(relax=True, torch_threads=0), "torch_threads must be a whole number ≥ 1"),
    "max_relax_atoms -1": (dict(relax=True, max_relax_atoms=-1), "max_relax_atoms must be a whole number ≥ 1"),
    "max_relax_atoms text": (dict(relax=True, max_relax_atoms="200"), "max_relax_atoms must be a whole number"),
    "max_reference_fingerprints 0": (dict(max_reference_fingerprints=0), "max_reference_fingerprints must be"),
    "reference a misspelt split": (dict(reference="bundled-trian"), "reference 'bundled-trian' is not one of"),
    "reference a number": (dict(reference=42), "reference must be a bundled split name"),
    "reference an empty list": (dict(reference=[]), "reference is an empty list"),
    "model unknown without relax": (dict(model="bogus"), "unknown relaxation model 'bogus'"),
    "names of the wrong length": (dict(names=["a", "b", "c"]), "names must be a list of one name per structure"),
    "names a string": (dict(names="ab"), "names must be a list of one name per structure"),
}


@pytest.mark.parametrize("case", sorted(API_MISTAKES))
def test_evaluate_refuses_arguments_it_cannot_use_before_any_work(real_structures, case):
    import mattergen_kit as mk

    fields, match = API_MISTAKES[case]
    settings = dict(relax=False, reference=None, distribution=False, band_gap=False, progress=False)
    with pytest.raises(ValueError, match=match):
        mk.evaluate(real_structures[:1], **{**settings, **fields})


@pytest.mark.parametrize("structures,error,match", [
    ([], ValueError, "no structures to evaluate"),
    (42, TypeError, "structures must be a list of pymatgen Structures"),
    ({"a": None}, TypeError, "structures must be a list of pymatgen Structures"),
    (["a.cif", "b.cif"], TypeError, r"structures\[0\] is a str, not a pymatgen Structure .*give their folder"),
])
def test_evaluate_refuses_inputs_that_are_not_structures(structures, error, match):
    import mattergen_kit as mk

    with pytest.raises(error, match=match):
        mk.evaluate(structures, relax=False, reference=None, distribution=False, progress=False)


def test_evaluate_of_one_structure_is_a_list_of_one(real_structures, tmp_path):
    import mattergen_kit as mk

    report = mk.evaluate(real_structures[0], relax=False, reference=None, distribution=False, band_gap=False,
                         progress=False)
    assert len(report.per_structure) == 1 and bool(report.per_structure["structural_valid"].iloc[0])
    with pytest.raises(ValueError, match="is a file, not a folder"):
        a_file = tmp_path / "f.txt"
        a_file.write_text("x")
        mk.evaluate(real_structures[:1], relax=False, reference=None, distribution=False, out=a_file)


def _garbage(path):
    path.write_bytes(bytes(range(256)) * 16)
    return path


CLI_MISTAKES = {  # name: (extra arguments (OUT and GOOD filled in), message)
    "fmax inf": (["--fmax", "inf"], "--fmax must be a finite number > 0"),
    "device empty": (["--device", ""], "is not a device name"),
    "dask scheduler empty": (["--dask-scheduler", " "], "--dask-scheduler needs an address"),
    "dask scheduler with --no-relax": (["--no-relax", "--dask-scheduler", "tcp://127.0.0.1:9"],
                                       "with --no-relax there are none"),
    "out empty": (["--out", ""], "--out needs a folder name"),
    "reference an empty folder": (["--no-relax", "--reference", "EMPTY"], "no structure files"),
    "reference a garbage file": (["--no-relax", "--reference", "GARBAGE"], "no readable structure in it"),
    "input a garbage file": (["--no-relax", "--input", "GARBAGE"], "none of the 1 input(s) could be read"),
    "input a folder of garbage": (["--no-relax", "--input", "GARBAGE_DIR"], "none of the 2 input(s) could be read"),
}


@pytest.mark.parametrize("case", sorted(CLI_MISTAKES))
def test_evaluate_cli_mistakes_found_by_the_probe(tmp_path, real_rows, capsys, case):
    from mattergen_kit import cli

    extra, match = CLI_MISTAKES[case]
    good = tmp_path / "in"
    good.mkdir()
    (good / "a.cif").write_text(real_rows.cif[0])
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage_dir").mkdir()
    for k in range(2):
        _garbage(tmp_path / "garbage_dir" / f"g{k}.cif")
    paths = {"EMPTY": tmp_path / "empty", "GARBAGE": _garbage(tmp_path / "g.cif"),
             "GARBAGE_DIR": tmp_path / "garbage_dir"}
    extra = [str(paths.get(a, a)) for a in extra]
    source = str(good)
    if "--input" in extra:
        k = extra.index("--input")
        source = extra[k + 1]
        del extra[k:k + 2]
    argv = ["evaluate", source, "--out", str(tmp_path / "o"), "--no-distribution", *extra]
    if "--reference" not in extra:
        argv += ["--reference", "none"]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert any(line.startswith("error: ") and match in line for line in err.splitlines()), err
