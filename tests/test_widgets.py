"""Inline viewer and PNG grid on structures built with pymatgen."""
import json
import re

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mattergen_kit.widgets import CrystalView, structure_grid, view


@pytest.fixture
def perovskite():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


def test_canvas_view_embeds_every_atom_and_needs_no_cdn(perovskite):
    html = view(perovskite)._repr_html_()
    assert "<canvas" in html and "http" not in html  # no external script
    data = json.loads(re.search(r"const d = (\{.*?\}), cv", html, re.S).group(1))
    assert len(data["atoms"]) == len(perovskite) == 5
    assert sorted(a["el"] for a in data["atoms"]) == ["O", "O", "O", "Sr", "Ti"]
    xyz = np.array([a["xyz"] for a in data["atoms"]])
    np.testing.assert_allclose(np.sort(xyz, axis=0), np.sort(perovskite.cart_coords, axis=0), atol=1e-3)
    assert len(data["edges"]) == 12


def test_supercell_view_repeats_atoms(perovskite):
    assert len(CrystalView(perovskite, supercell=(2, 1, 1)).data["atoms"]) == 10


def test_unknown_backend_is_a_clear_error(perovskite):
    with pytest.raises(ValueError, match="unknown backend"):
        view(perovskite, backend="povray")


def test_grid_png_is_written(tmp_path, perovskite):
    from PIL import Image

    path = tmp_path / "grid.png"
    structure_grid([perovskite] * 5, ncols=3, path=path)
    with Image.open(path) as im:
        width, height = im.size
        pixels = np.asarray(im.convert("L"))
    assert width > height > 0
    assert pixels.std() > 5  # something was drawn


def test_grid_rejects_empty_input():
    with pytest.raises(ValueError, match="no structures"):
        structure_grid([])
