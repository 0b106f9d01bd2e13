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
    assert "<canvas" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no external script, image or style
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


def test_grid_names_each_cells_elements_under_it(perovskite):
    """A grid of a perovskite and rock salt: each panel's legend lists its own elements, by atomic number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    fig = structure_grid([perovskite, nacl, nacl], ncols=2)            # 2 x 2 panels, the last one empty
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes[:3]]
    assert legends == [["O", "Ti", "Sr"], ["Na", "Cl"], ["Na", "Cl"]]
    assert fig.axes[3].get_legend() is None
    plt.close(fig)
    bare = structure_grid([nacl], legend=False)
    assert bare.axes[0].get_legend() is None
    plt.close(bare)


def test_grid_rejects_empty_input():
    with pytest.raises(ValueError, match="no structures"):
        structure_grid([])


def _scene(html):
    return json.loads(re.search(r"const d = (\{.*?\}), cv", html, re.S).group(1))


def test_view_shows_cell_axes_legend_and_labels(perovskite):
    data = _scene(view(perovskite)._repr_html_())
    named = {e[3]: (e[0], e[1]) for e in data["edges"] if e[3]}
    assert named == {"a": (0, 4), "b": (0, 2), "c": (0, 1)}          # lattice vectors from the origin corner
    corners = np.array(data["corners"])
    np.testing.assert_allclose(corners[4] - corners[0], perovskite.lattice.matrix[0], atol=1e-3)
    assert [name for name, _ in data["legend"]] == ["O", "Ti", "Sr"]  # by atomic number
    assert data["labels"] is True and {a["el"] for a in data["atoms"]} == {"Sr", "Ti", "O"}
    assert "fillText(a.el" in view(perovskite)._repr_html_()           # the canvas writes the labels
    assert _scene(view(perovskite, labels=False)._repr_html_())["labels"] is False


def test_every_view_carries_a_static_png(perovskite):
    import base64
    import io

    from PIL import Image

    bundle = view(perovskite)._repr_mimebundle_()
    assert set(bundle) == {"text/html", "image/png", "text/plain"}
    png = base64.b64decode(bundle["image/png"])
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (360, 320)
        rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert (np.abs(rgb.astype(int) - [0, 255, 0]).sum(1) < 40).sum() > 100   # Sr is drawn in its Jmol green
    html = bundle["text/html"]
    # untrusted / no-JS front ends show the <img>; the script hides it and shows the canvas instead
    img = re.search(r'<img id="(mgk-[0-9a-f]+)-png" src="data:image/png;base64,([^"]+)"', html)
    assert img and base64.b64decode(img.group(2)) == png
    assert f'<canvas id="{img.group(1)}"' in html and "display:none" in html
    assert "img.style.display = 'none'" in html
    assert "image/png" not in view(perovskite, static=False)._repr_mimebundle_()


def test_view_of_a_half_denoised_batch_draws_masked_atoms_grey(perovskite):
    import torch

    from mattergen_kit.data import MASK_Z, CrystalBatch

    batch = CrystalBatch.from_structures([perovskite])
    batch = batch.replace(atom_types=torch.where(batch.atom_types == 8, MASK_Z, batch.atom_types))
    v = view(batch)
    assert sorted(a["el"] for a in v.data["atoms"]) == ["?", "?", "?", "Sr", "Ti"]
    assert v.data["legend"][-1] == ["masked", "rgb(158,158,158)"]
    assert v.data["title"] == "SrTi + 3 masked (5 atoms)"
    assert v.png()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="expected one crystal"):
        view(CrystalBatch.collate([batch, batch]))


def test_nglview_backend_adds_the_unit_cell(perovskite):
    pytest.importorskip("nglview")
    widget = view(perovskite, backend="nglview")
    calls = [m for m in widget._ngl_msg_archive if m.get("methodName") == "addRepresentation"]
    assert any(m["args"][0] == "unitcell" for m in calls)


def test_ipywidgets_parts_name_the_missing_extra(monkeypatch):
    import sys

    import mattergen_kit.widgets as widgets

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    for name in ("mattergen_kit.widgets.panel", "mattergen_kit.widgets.player"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError, match=r"GenerationPanel needs ipywidgets: pip install 'mattergen_kit\[notebook\]'"):
        widgets.GenerationPanel
    assert callable(widgets.trajectory_strip) and callable(widgets.view)  # matplotlib-only parts still work
    with pytest.raises(AttributeError):
        widgets.NoSuchWidget
