"""evaluate_cli: `mattergen-kit evaluate DIR --out OUT [--no-relax] [--reference NAME]` writes its files."""

import json
import warnings

import pandas as pd
import pytest

from mattergen_kit.evaluation import evaluate_cli, load_structures


@pytest.fixture()
def folder(tmp_path):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    d = tmp_path / "gen"
    d.mkdir()
    small = [s for s in te.structures if len(s) <= 6][:3]
    for k, s in enumerate(small):
        s.to(filename=str(d / f"s{k}.cif"))
    write(str(d / "frames.extxyz"), [AseAtomsAdaptor.get_atoms(s) for s in small[:2]], format="extxyz")
    (d / "broken.cif").write_text("data_broken\n_cell_length_a nonsense\n")
    return d


def test_load_structures_reports_unreadable_files(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structs, names, errors = load_structures(folder)
    assert len(structs) == 6
    assert names.count("frames.extxyz#0") == 1 and "broken.cif" in names
    assert structs[names.index("broken.cif")] is None and errors[names.index("broken.cif")]


def test_cli_no_relax_writes_outputs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = evaluate_cli([str(folder), "--out", str(out), "--no-relax", "--reference", "bundled-test",
                           "--no-distribution"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for k in ("n", "structural_validity", "compositional_validity", "uniqueness", "novelty", "stability", "sun",
              "rmsd"):
        assert k in summary
    assert summary["n"] == 6 and summary["stability"] is None and summary["rmsd"] is None
    assert summary["novelty"] == 0.0  # they are bundled test crystals, compared with the test split
    assert summary["uniqueness"] == pytest.approx(3 / 6)  # extxyz frames duplicate two CIFs; broken is not unique
    df = pd.read_csv(out / "per_structure.csv")
    assert len(df) == 6 and not df.loc[df.name == "broken.cif", "structural_valid"].item()
    assert (out / "summary.png").exists() and (out / "spacegroups.png").exists()
    assert "structural_validity" in capsys.readouterr().out


def test_cli_relax_small(folder, tmp_path):
    out = tmp_path / "out_relax"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = evaluate_cli([str(folder / "s0.cif"), "--out", str(out), "--reference", "none", "--steps", "20",
                           "--no-distribution"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 1 and summary["rmsd"] is not None and summary["stability"] in (0.0, 1.0)
    assert summary["sun"] is None  # no reference: novelty (and so S.U.N.) not computed
    assert (out / "relaxed.jsonl").exists()


def test_cli_bad_arguments(tmp_path):
    rc = evaluate_cli([str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-relax"])
    assert rc == 2


def test_optional_backends_fail_fast_with_clear_errors(monkeypatch):
    from pymatgen.core import Lattice, Structure

    from mattergen_kit.evaluation import evaluate

    s = [Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])]
    try:
        import sevenn  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="SevenNet"):
            evaluate(s, reference=None, model="sevennet", progress=False)
    for k in ("MP_API_KEY", "PMG_MAPI_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="API key"):
        evaluate(s, reference=None, hull="mp", progress=False)


def _as_if_unknown(monkeypatch):
    """Judge novelty as if the bundled crystals and the Materials Project compositions were unknown (no known
    compositions, no bundled-structure matches beyond the reference): real MP crystals then stand in for new ones."""
    from mattergen_kit.evaluation import stages

    def no_bundled_match(rows, final, valid, ref_name):
        for r in rows:
            r["matches_bundled"], r["matched_bundled_id"] = False, None

    monkeypatch.setattr(stages, "known_compositions", lambda: {})
    monkeypatch.setattr(stages, "_bundled_matches", no_bundled_match)


def test_cli_known_crystals_are_not_sun(folder, tmp_path, capsys):
    """Bundled test crystals are novel against the train split, but they are known: each matches its bundled
    structure (any split) and its composition is a known MP phase, so none is S.U.N.; the printout names the hull."""
    out = tmp_path / "out_known"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = evaluate_cli([str(folder), "--out", str(out), "--reference", "bundled-train", "--steps", "30",
                           "--no-distribution"])
    assert rc == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(out / "per_structure.csv")
    cifs = df[df["name"].str.match(r"s\d\.cif")]
    assert len(cifs) == 3 and cifs["novel"].all()                        # not in the train split ...
    assert cifs["matches_bundled"].all() and cifs["matched_bundled_id"].str.startswith("mp-").all()  # ... but known
    assert cifs["known_composition"].all() and cifs["known_composition_id"].notna().all()
    assert not df["sun"].fillna(False).astype(bool).any() and "S.U.N. crystals:" not in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sun"] == 0.0 and summary["novelty"] > 0 and summary["novelty_composition"] == 0.0
    assert summary["hull"] == "mp20+mpfe" and summary["hull_sources"]["mp_formation_energies"] == 15104
    assert "hull mp20+mpfe" in printed and "E_hull <= 0.1" in printed and "n = 6" in printed


def test_cli_lists_the_sun_crystals_it_found(folder, tmp_path, capsys, monkeypatch):
    """Three bundled test crystals (real MP structures, absent from the train split) judged against bundled-train, as
    if unknown otherwise: the printed S.U.N. list is exactly the stable ∧ unique ∧ novel rows of per_structure.csv,
    lowest E_hull first, and Report.candidates gives the same rows."""
    from mattergen_kit.evaluation import evaluate

    _as_if_unknown(monkeypatch)
    out = tmp_path / "out_sun"
    cifs = sorted(folder.glob("s*.cif"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = evaluate_cli([str(folder), "--out", str(out), "--reference", "bundled-train", "--steps", "30",
                           "--no-distribution"])
    assert rc == 0
    printed = capsys.readouterr().out
    df = pd.read_csv(out / "per_structure.csv")
    sun = df[df["stable"].fillna(False).astype(bool) & df["unique"].fillna(False).astype(bool)
             & df["novel"].fillna(False).astype(bool)].sort_values("e_above_hull")
    assert len(sun) >= 1                                  # known crystals relax to near their hull
    assert list(df.loc[df["sun"], "name"].sort_values()) == sorted(sun["name"])
    assert f"S.U.N. crystals: {len(sun)} " in printed and "confirm with DFT" in printed
    listed = [line.split()[0] for line in printed.splitlines() if line.startswith("  ") and "atoms  E_hull" in line]
    assert listed == list(sun["name"])
    assert len(cifs) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(folder, reference="bundled-train", steps=30, out=out, distribution=False, progress=False)
    assert list(report.candidates(None)["name"]) == list(sun["name"])     # resumed from out/: the same relaxations
    assert list(report.candidates(1)["name"]) == list(sun["name"])[:1]


def test_saved_report_holds_the_sun_crystals_relaxed_cells(folder, tmp_path, monkeypatch):
    """evaluate(out=...) writes sun_candidates/<name>.cif (the relaxed cells, readable by pymatgen, the same
    composition) and candidates.csv; saving a report with no S.U.N. crystal into the folder removes them."""
    from pymatgen.core import Structure

    from mattergen_kit.evaluation import evaluate

    _as_if_unknown(monkeypatch)
    out = tmp_path / "out_cands"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = evaluate(folder, reference="bundled-train", steps=30, out=out, distribution=False, progress=False)
    table = pd.read_csv(out / "sun_candidates" / "candidates.csv")
    expected = report.candidates(None)
    assert len(table) == len(expected) >= 1
    assert list(table["name"]) == list(expected["name"])
    for _, row in table.iterrows():
        cif = Structure.from_file(out / "sun_candidates" / row["cif"])
        relaxed = report.structures[int(expected.index[list(expected["name"]).index(row["name"])])]
        assert cif.composition.reduced_formula == row["formula"] == relaxed.composition.reduced_formula
        assert abs(cif.volume - relaxed.volume) < 1e-3 * relaxed.volume      # the relaxed cell, not the input
    report.per_structure["sun"] = False                                      # a report with none: folder emptied
    assert report.write_candidates(out / "sun_candidates") == 0
    assert not any((out / "sun_candidates").iterdir())
