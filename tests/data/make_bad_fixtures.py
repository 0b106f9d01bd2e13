"""Regenerate tests/data/bad/ from a real bundled row (run: python tests/data/make_bad_fixtures.py).

Each file is one kind of broken input; tests/test_data_bad.py says what each must produce.
"""

import gzip
import json
import zipfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad"
REPO = HERE.parents[1]


def main() -> None:
    BAD.mkdir(exist_ok=True)
    rows = pd.read_csv(HERE / "mp_rows" / "mp20_biternary_val_head120.csv.gz", nrows=3)
    cif = rows.cif[0]  # TmMgHg2, 4 atoms, real MP-20 row mp-865981
    atom_lines = [ln for ln in cif.splitlines() if ln.startswith("  Tm ") or ln.startswith("  Mg ")
                  or ln.startswith("  Hg ")]
    w = lambda name, text: (BAD / name).write_text(text)  # noqa: E731
    w("malformed.cif", "data_broken\n_cell_length_a 5.0\n_cell_length_b\nloop_\n_atom_site_label\n Tm0 0.1\n")
    w("unknown_element.cif", cif.replace("  Hg  Hg2", "  Xx  Hg2"))
    w("element_z101.cif", cif.replace("  Tm  Tm0", "  Md  Tm0"))
    w("zero_volume.cif", cif.replace("_cell_length_c   5.04880040", "_cell_length_c   0.00000000"))
    w("negative_lattice_length.cif", cif.replace("_cell_length_a   5.04880040", "_cell_length_a   -5.04880040"))
    w("angle_over_180.cif", cif.replace("_cell_angle_beta   60.00000000", "_cell_angle_beta   200.00000000"))
    w("zero_angle.cif", cif.replace("_cell_angle_alpha   60.00000000", "_cell_angle_alpha   0.00000000"))
    w("text_cell_length.cif", cif.replace("_cell_length_b   5.04880040", "_cell_length_b   abc"))
    w("needle_cell.cif", cif.replace("_cell_length_a   5.04880040", "_cell_length_a   50000.0"))
    w("two_blocks.cif", cif + "\n" + cif.replace("data_TmMgHg2", "data_second"))
    w("truncated.cif", cif[: len(cif) * 3 // 4])
    w("negative_occupancy.cif", cif.replace("  Mg  Mg1  1  0.50000000  0.50000000  0.50000000  1",
                                            "  Mg  Mg1  1  0.50000000  0.50000000  0.50000000  -1"))
    w("inf_coords.cif", cif.replace("  Mg  Mg1  1  0.50000000", "  Mg  Mg1  1  inf"))
    (BAD / "utf16.cif").write_bytes(cif.encode("utf-16"))
    w("empty.extxyz", "")
    w("wrong_count.extxyz", '3\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
                            "Na 0 0 0\nCl 1.5 1.5 1.5\n")
    w("unknown_element.extxyz", '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nQq 0 0 0\n')
    w("nan_position.extxyz", '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3 pbc="T T T"\nNa nan 0 0\n')
    w("nan_lattice.cif", cif.replace("_cell_length_a   5.04880040", "_cell_length_a   nan"))
    w("nan_coords.cif", cif.replace("  Mg  Mg1  1  0.50000000", "  Mg  Mg1  1  nan"))
    w("overlapping_atoms.cif", cif.replace("  Mg  Mg1  1  0.50000000  0.50000000  0.50000000",
                                           "  Mg  Mg1  1  0.00100000  0.00000000  0.00000000"))
    w("partial_occupancy.cif", cif.replace("  Mg  Mg1  1  0.50000000  0.50000000  0.50000000  1",
                                           "  Mg  Mg1  1  0.50000000  0.50000000  0.50000000  0.5"))
    mg = next(ln for ln in cif.splitlines() if ln.startswith("  Mg "))
    w("duplicate_site.cif", cif.replace(mg, mg + "\n" + mg))
    w("no_atoms.cif", "\n".join(ln for ln in cif.splitlines() if ln not in atom_lines) + "\n")
    w("empty.cif", "")
    (BAD / "binary_garbage.cif").write_bytes(bytes(range(256)) * 4)
    w("empty.csv", "")
    w("header_only.csv", "material_id,band_gap,cif\n")
    pd.DataFrame({"material_id": ["x"], "structure": [cif]}).to_csv(BAD / "missing_cif_column.csv", index=False)
    pd.DataFrame({"material_id": list(rows.material_id[:2]), "band_gap": [1.0, "abc"],
                  "cif": list(rows.cif[:2])}).to_csv(BAD / "wrong_types.csv", index=False)
    pd.DataFrame({"material_id": ["good", "garbage", "blank", "unknown"],
                  "cif": [rows.cif[1], "this is not a CIF", "", cif.replace("  Hg  Hg2", "  Qq  Hg2")]}
                 ).to_csv(BAD / "bad_rows.csv", index=False)
    w("not_gzip.csv.gz", "material_id,cif\nx,y\n")
    raw = gzip.compress(pd.DataFrame({"cif": list(rows.cif)}).to_csv(index=False).encode(), mtime=0)
    (BAD / "truncated.csv.gz").write_bytes(raw[: len(raw) // 2])
    w("no_entries.json", json.dumps({"data": [1, 2, 3]}))
    w("truncated_alexandria.json", '{"entries": [{"energy": -1.0, "structure": {"sites": [')
    w("malformed.extxyz", "2\nLattice=\"3 0 0 0 3 0 0 0 3\" Properties=species:S:1:pos:R:3\nNa 0 0\n")
    w("non_periodic.extxyz", "1\nProperties=species:S:1:pos:R:3\nNa 0 0 0\n")
    w("corrupt.zip", "PK\x03\x04 this is not really a zip archive")
    with zipfile.ZipFile(BAD / "empty.zip", "w"):
        pass
    with zipfile.ZipFile(BAD / "no_structures.zip", "w") as zf:
        zf.writestr(zipfile.ZipInfo("README.txt", date_time=(1980, 1, 1, 0, 0, 0)), "no crystals in here\n")


if __name__ == "__main__":
    main()
