"""Every broken input in tests/data/bad/ gives a clear error or a counted skip naming the file and row."""

import shutil
from pathlib import Path

import pytest

from mattergen_kit import datasets

BAD = Path(__file__).resolve().parent / "data" / "bad"

# file -> (expected outcome, regex the error message / skip reason must match)
CIF_LIKE = {
    "malformed.cif": r"malformed CIF",
    "unknown_element.cif": r"Xx.*not a valid Element",
    "element_z101.cif": r"unsupported element Md",
    "zero_volume.cif": r"malformed CIF|degenerate lattice",
    "negative_lattice_length.cif": r"_cell_length_a is -5.0488.*must be > 0",
    "angle_over_180.cif": r"_cell_angle_beta is 200.*\(0, 180\)",
    "duplicate_site.cif": r"duplicate sites: .*total occupancy of 2.0",
    "zero_angle.cif": r"_cell_angle_alpha is 0.0+ \(an angle must be in \(0, 180\)\)",
    "text_cell_length.cif": r"_cell_length_b is 'abc', not a number",
    "needle_cell.cif": r"implausible cell: a lattice vector is 5e\+04 Å long",
    "two_blocks.cif": r"CIF holds 2 structures",
    "truncated.cif": r"malformed CIF",
    "negative_occupancy.cif": r"occupancy '-1' \(must be a number in \(0, 1\]\)",
    "inf_coords.cif": r"malformed CIF",
    "empty.extxyz": r"empty file",
    "wrong_count.extxyz": r"malformed extxyz .*Frame has 2 atoms, expected 3",
    "unknown_element.extxyz": r"malformed extxyz: unknown element 'Qq'",
    "nan_position.extxyz": r"NaN/inf",
    "nan_lattice.cif": r"NaN",
    "nan_coords.cif": r"malformed CIF|NaN",
    "overlapping_atoms.cif": r"overlapping atoms",
    "partial_occupancy.cif": r"partial occupancy",
    "no_atoms.cif": r"malformed CIF|no atoms",
    "empty.cif": r"empty",
    "binary_garbage.cif": r"binary|malformed CIF",
    "malformed.extxyz": r"malformed extxyz",
    "non_periodic.extxyz": r"not periodic",
}
CSV_ERRORS = {
    "empty.csv": r"empty \(0 bytes\)",
    "header_only.csv": r"no data rows",
    "missing_cif_column.csv": r"no 'cif' column",
    "not_gzip.csv.gz": r"not a readable gzip",
    "truncated.csv.gz": r"not a readable gzip|truncated",
}


def test_at_least_40_bad_fixtures():
    assert len(list(BAD.iterdir())) >= 40


@pytest.mark.parametrize("name", sorted(CIF_LIKE))
def test_bad_structure_file_is_a_counted_skip(tmp_path, real_rows, name):
    (tmp_path / "good.cif").write_text(real_rows.cif[3])
    shutil.copy(BAD / name, tmp_path / name)
    ds = datasets.load_cif_folder(tmp_path, workers=1, progress=False)
    assert len(ds) == 1 and list(ds.properties["material_id"]) == ["good"]
    assert ds.report.kept == 1 and ds.report.n_skipped == 1
    skip = ds.report.skipped[0]
    assert name in skip.source, skip
    assert skip.row == 0
    assert pytest.importorskip("re").search(CIF_LIKE[name], skip.reason), skip.reason
    assert name in str(ds.report)


@pytest.mark.parametrize("name", sorted(CSV_ERRORS))
def test_bad_csv_file_is_a_clear_error(name):
    with pytest.raises((ValueError, FileNotFoundError), match=CSV_ERRORS[name]) as info:
        datasets.load_csv(BAD / name, cache=False, workers=1, progress=False)
    assert name in str(info.value)


def test_a_utf16_cif_is_read_like_utf8(tmp_path, real_rows):
    """A CIF saved as UTF-16 (with its byte-order mark) is text, not binary: it is kept."""
    import shutil as sh

    sh.copy(BAD / "utf16.cif", tmp_path / "utf16.cif")
    (tmp_path / "utf8.cif").write_text((BAD / "utf16.cif").read_bytes().decode("utf-16"))
    ds = datasets.load_cif_folder(tmp_path, workers=1, progress=False)
    assert ds.report.n_skipped == 0 and sorted(ds.properties["material_id"]) == ["utf16", "utf8"]
    assert ds.structures[0] == ds.structures[1]


def test_a_needle_cell_is_refused_quickly(tmp_path):
    """Niggli reduction of a 50,000 Å cell ran for minutes (a hung load); it is refused before that."""
    import time

    sh = pytest.importorskip("shutil")
    sh.copy(BAD / "needle_cell.cif", tmp_path / "needle_cell.cif")
    start = time.perf_counter()
    ds = datasets.load_cif_folder(tmp_path, workers=1, progress=False)
    assert time.perf_counter() - start < 20
    assert len(ds) == 0 and "implausible cell" in ds.report.skipped[0].reason


def test_wrong_type_value_is_a_counted_skip(real_rows):
    ds = datasets.load_csv(BAD / "wrong_types.csv", cache=False, workers=1, progress=False)
    assert len(ds) == 1 and ds.properties["material_id"].iloc[0] == real_rows.material_id[0]
    (skip,) = ds.report.skipped
    assert skip.source == "wrong_types.csv" and skip.row == 1 and skip.material_id == real_rows.material_id[1]
    assert "band_gap" in skip.reason and "'abc'" in skip.reason



def test_missing_markers_in_a_csv_are_counted_per_column(real_rows, tmp_path, monkeypatch):
    """pandas reads 'n/a', 'NA', '' ... as NaN: such cells are missing labels (kept as unknown), counted per column
    in the report next to the wrong-type skips, also when the dataset comes back from the cache."""
    import math

    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    df = real_rows.head(8).astype({"band_gap": object, "e_above_hull": object})
    df.loc[[1, 3, 5], "band_gap"] = "n/a"
    df.loc[2, "e_above_hull"] = "NA"
    df.loc[4, "band_gap"] = "2.1 eV"
    df.to_csv(tmp_path / "with_na.csv", index=False)
    for _ in range(2):  # built, then read from the cache
        ds = datasets.load_csv(tmp_path / "with_na.csv", workers=1, progress=False)
        (skip,) = ds.report.skipped
        assert skip.row == 4 and "'2.1 eV' is not a number" in skip.reason
        notes = {k.split(":")[0]: n for k, n in ds.report.notes.items() if "missing values" in k}
        assert notes == {"band_gap": 3, "e_above_hull": 1}
        assert "band_gap: missing values (empty or NA markers such as 'n/a'" in str(ds.report)
        gaps = dict(zip(ds.properties.material_id, ds.properties.band_gap))
        assert len(gaps) == 7 and all(math.isnan(gaps[real_rows.material_id[i]]) for i in (1, 3, 5))
        assert gaps[real_rows.material_id[0]] == real_rows.band_gap[0]
        assert math.isnan(ds.properties.e_above_hull[ds.properties.material_id == real_rows.material_id[2]].iloc[0])

def test_bad_rows_of_a_csv_are_counted_skips_with_rows():
    ds = datasets.load_csv(BAD / "bad_rows.csv", cache=False, workers=1, progress=False)
    assert list(ds.properties["material_id"]) == ["good"]
    by_row = {s.row: s for s in ds.report.skipped}
    assert sorted(by_row) == [1, 2, 3]
    assert "malformed CIF" in by_row[1].reason and by_row[1].material_id == "garbage"
    assert "empty" in by_row[2].reason
    assert "Qq" in by_row[3].reason
    assert all(s.source == "bad_rows.csv" for s in ds.report.skipped)
    assert ds.report.kept + ds.report.n_skipped == 4


@pytest.mark.parametrize("name,match", [("no_entries.json", r"no \"entries\" array"),
                                        ("truncated_alexandria.json", r"truncated|malformed")])
def test_bad_alexandria_file_is_a_clear_error(name, match):
    with pytest.raises(ValueError, match=match) as info:
        datasets.load_alexandria(BAD / name, workers=1, progress=False)
    assert name in str(info.value)


@pytest.mark.parametrize("name", ["empty.zip", "no_structures.zip"])
def test_a_zip_without_structures_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"holds no .cif/.extxyz files"):
        datasets.load_cif_folder(BAD / name, workers=1, progress=False)


def test_corrupt_zip_is_a_clear_error():
    with pytest.raises(ValueError, match="corrupt"):
        datasets.load_cif_folder(BAD / "corrupt.zip", workers=1, progress=False)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_csv(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_cif_folder(tmp_path / "nope.zip")
    with pytest.raises(ValueError, match="no .cif/.extxyz files"):
        datasets.load_cif_folder(tmp_path)


@pytest.mark.parametrize("kind", ["dangling", "loop", "to_directory"])
def test_unreadable_cif_entries_are_reported_not_dropped(tmp_path, real_rows, kind):
    """A .cif symlink that dangles, loops or points at a folder is a counted skip naming it."""
    (tmp_path / "good.cif").write_text(real_rows.cif[3])
    bad = tmp_path / "bad.cif"
    if kind == "dangling":
        bad.symlink_to(tmp_path / "gone.cif")
    elif kind == "loop":
        bad.symlink_to(tmp_path / "bad2.cif")
        (tmp_path / "bad2.cif").symlink_to(bad)
    else:
        (tmp_path / "sub").mkdir()
        bad.symlink_to(tmp_path / "sub")
    ds = datasets.load_cif_folder(tmp_path, workers=1, progress=False)
    assert list(ds.properties["material_id"]) == ["good"]
    reasons = {s.source: s.reason for s in ds.report.skipped}
    assert "bad.cif" in reasons, ds.report
    expected = {"dangling": r"symlink to .*gone.cif cannot be read", "loop": r"symlink .*cannot be read",
                "to_directory": r"symlink to .*sub cannot be read \(Is a directory\)"}[kind]
    assert pytest.importorskip("re").search(expected, reasons["bad.cif"]), reasons
    assert ds.report.kept + ds.report.n_skipped == 1 + len(reasons)


# ------------------------------------------------------------------------------ issue 24: the loaders' filters
# tools/probe_entry_points.py: max_atoms=0 or -1 filtered every row away and returned an empty dataset as a success,
# a NaN cut-off compares false with everything, a number as the path and an empty list of dumps were tracebacks.
def _good_csv(tmp_path, real_rows):
    path = tmp_path / "rows.csv"
    real_rows.head(3).to_csv(path, index=False)
    return path


LOADER_MISTAKES = {
    "load_csv max_atoms 0": (lambda p, t: datasets.load_csv(p, max_atoms=0, cache=False, progress=False),
                             ValueError, "max_atoms must be a whole number ≥ 1"),
    "load_csv max_atoms -1": (lambda p, t: datasets.load_csv(p, max_atoms=-1, cache=False, progress=False),
                              ValueError, "max_atoms must be a whole number ≥ 1"),
    "load_csv e_above_hull_max nan": (lambda p, t: datasets.load_csv(p, e_above_hull_max=float("nan"), cache=False,
                                                                     progress=False),
                                      ValueError, "e_above_hull_max must be a finite number"),
    "load_csv a number as the path": (lambda p, t: datasets.load_csv(42, progress=False), TypeError,
                                      "path must be a file or folder path"),
    "load_cif_folder max_atoms -1": (lambda p, t: datasets.load_cif_folder(t, max_atoms=-1, progress=False),
                                     ValueError, "max_atoms must be a whole number ≥ 1"),
    "load_icsd max_atoms 0": (lambda p, t: datasets.load_icsd(t, max_atoms=0, progress=False), ValueError,
                              "max_atoms must be a whole number ≥ 1"),
    "load_alexandria no files": (lambda p, t: datasets.load_alexandria([], progress=False), ValueError,
                                 "needs at least one dump file"),
    "load_alexandria limit 0": (lambda p, t: datasets.load_alexandria(BAD / "truncated_alexandria.json", limit=0,
                                                                      progress=False),
                                ValueError, "limit must be a whole number ≥ 1"),
    "load_alexandria e_above_hull_max nan": (lambda p, t: datasets.load_alexandria(
        BAD / "truncated_alexandria.json", e_above_hull_max=float("nan"), progress=False),
        ValueError, "e_above_hull_max must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(LOADER_MISTAKES))
def test_a_loader_refuses_a_filter_it_cannot_apply(tmp_path, real_rows, case):
    call, error, match = LOADER_MISTAKES[case]
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "a.cif").write_text(real_rows.cif[0])
    with pytest.raises(error, match=match):
        call(_good_csv(tmp_path, real_rows), folder)


def test_a_filter_of_one_atom_short_still_loads_and_counts(tmp_path, real_rows):
    """The rule refuses nonsense only: max_atoms=1 is a real (if strict) filter, its rows counted as filtered."""
    ds = datasets.load_csv(_good_csv(tmp_path, real_rows), max_atoms=1, cache=False, progress=False)
    assert len(ds) == 0 and ds.report.n_skipped == 3


@pytest.mark.parametrize("fractions", [(1.5, 0.0, 0.0), (-0.2, 0.6, 0.6), (float("nan"), 0.5, 0.5), (0.5, 0.5)])
def test_split_fractions_must_be_three_shares_summing_to_one(fractions):
    with pytest.raises(ValueError, match="fractions must be three shares"):
        datasets.split_of("mp-149", fractions=fractions)
    assert datasets.split_of("mp-149", fractions=(0.5, 0.25, 0.25)) in ("train", "val", "test")
