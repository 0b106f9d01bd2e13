"""Interactive 3D crystal view for notebooks that needs no CDN and no front-end extension.

``view(structure)`` returns a :class:`CrystalView` that Jupyter renders as a self-contained HTML ``<canvas>``
with a few lines of inline JavaScript: drag to rotate, wheel to zoom. It draws the unit cell (a, b, c in red,
green, blue from the origin), an element legend and the element symbol on each atom (masked atoms of a
denoising trajectory grey, "?"). Everything is embedded in the cell output, so it works offline, in
JupyterLab 4, in VS Code and in exported HTML.

A static picture is saved with every view: the HTML holds a PNG ``<img>`` that the script replaces by the
canvas, and the output also carries an ``image/png`` mime bundle. A notebook reopened untrusted (scripts not
run) or shown by a renderer without JavaScript still shows the crystal.

``view(structure, backend="nglview")`` uses nglview (3.1.4 works in JupyterLab 4) with its unit cell; it needs
the nglview front end and a live kernel, so it is not the default.

>>> from pymatgen.core import Lattice, Structure
>>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
>>> v = view(nacl)                 # in a notebook: the last expression of a cell shows it
>>> sorted(v._repr_mimebundle_())
['image/png', 'text/html', 'text/plain']
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid

import numpy as np

from mattergen_kit.render import (_AXES, _CORNERS, _EDGES, _element_style, crystal_arrays, crystal_png,
                                          crystal_title, element_label, legend_entries)

_JS = r"""
(function(){
const d = DATA, cv = document.getElementById(ID), ctx = cv.getContext('2d');
const img = document.getElementById(ID + '-png'); if (img) img.style.display = 'none';
cv.style.display = 'inline-block';
let ax = 0.5, ay = -0.6, zoom = 1.0, drag = null, labels = d.labels;
const c = d.center;
function rot(p){ const x=p[0]-c[0], y=p[1]-c[1], z=p[2]-c[2];
  const x1 = Math.cos(ay)*x + Math.sin(ay)*z, z1 = -Math.sin(ay)*x + Math.cos(ay)*z;
  const y2 = Math.cos(ax)*y - Math.sin(ax)*z1, z2 = Math.sin(ax)*y + Math.cos(ax)*z1;
  return [x1, y2, z2]; }
function draw(){
  const W = cv.width, H = cv.height, s = zoom*0.8*Math.min(W,H)/d.span;
  ctx.clearRect(0,0,W,H); ctx.fillStyle = '#fff'; ctx.fillRect(0,0,W,H);
  for (const e of d.edges){ const a = rot(d.corners[e[0]]), b = rot(d.corners[e[1]]);
    ctx.lineWidth = e[3] ? 2 : 1; ctx.strokeStyle = e[2];
    ctx.beginPath(); ctx.moveTo(W/2+s*a[0], H/2-s*a[1]); ctx.lineTo(W/2+s*b[0], H/2-s*b[1]); ctx.stroke();
    if (e[3]) { ctx.fillStyle = e[2]; ctx.font = 'bold 12px sans-serif'; ctx.fillText(e[3], W/2+s*b[0]+3, H/2-s*b[1]-3); } }
  const pts = d.atoms.map(a => [rot(a.xyz), a]).sort((p,q) => p[0][2]-q[0][2]);
  ctx.lineWidth = 1;
  for (const [p,a] of pts){ const R = Math.max(2, s*a.r), X = W/2+s*p[0], Y = H/2-s*p[1];
    ctx.beginPath(); ctx.arc(X, Y, R, 0, 2*Math.PI);
    ctx.fillStyle = a.color; ctx.fill(); ctx.strokeStyle = '#222'; ctx.stroke();
    if (labels && R > 7){ ctx.fillStyle = a.text; ctx.font = Math.min(14, Math.round(R)) + 'px sans-serif';
      ctx.textAlign = 'center'; ctx.textBaseline = 'middle'; ctx.fillText(a.el, X, Y);
      ctx.textAlign = 'start'; ctx.textBaseline = 'alphabetic'; } }
  ctx.fillStyle = '#000'; ctx.font = '12px sans-serif'; ctx.fillText(d.title, 6, 14);
  let y = 30;
  for (const [name, color] of d.legend){ ctx.beginPath(); ctx.arc(W-64, y-4, 5, 0, 2*Math.PI);
    ctx.fillStyle = color; ctx.fill(); ctx.strokeStyle = '#222'; ctx.stroke();
    ctx.fillStyle = '#000'; ctx.fillText(name, W-54, y); y += 16; }
  ctx.fillStyle = '#888'; ctx.font = '10px sans-serif'; ctx.fillText('drag: rotate, wheel: zoom, L: labels', 6, H-6);
}
cv.tabIndex = 0;
cv.onmousedown = e => { drag = [e.clientX, e.clientY]; cv.focus(); };
window.addEventListener('mouseup', () => drag = null);
cv.onmousemove = e => { if(!drag) return; ay += (e.clientX-drag[0])*0.01; ax += (e.clientY-drag[1])*0.01;
  drag = [e.clientX, e.clientY]; draw(); };
cv.onwheel = e => { e.preventDefault(); zoom *= e.deltaY < 0 ? 1.1 : 0.9; draw(); };
cv.onkeydown = e => { if (e.key === 'l' || e.key === 'L') { labels = !labels; draw(); } };
draw();
})();
"""


def _css_rgb(color) -> str:
    return "rgb({},{},{})".format(*(np.asarray(color) * 255).round().astype(int))


def scene_data(crystal, supercell=(1, 1, 1), title: str | None = None, labels: bool = True) -> dict:
    """The JSON scene the canvas draws: atoms (Cartesian xyz, radius, colour, symbol), cell corners and edges
    (a, b, c edges coloured and named), legend, title. ``crystal``: a pymatgen ``Structure`` or a one-crystal
    ``CrystalBatch`` (masked atoms allowed)."""
    types, frac, L = crystal_arrays(crystal)
    atoms = []
    for shift in itertools.product(*(range(n) for n in supercell)):
        for z, f in zip(types, frac):
            xyz = (np.mod(f, 1.0) + np.array(shift)) @ L
            color, radius = _element_style(z)
            light = float(np.dot(np.asarray(color, float), [0.299, 0.587, 0.114])) > 0.55
            atoms.append({"xyz": xyz.round(4).tolist(), "r": round(0.5 * radius, 3), "color": _css_rgb(color),
                          "el": element_label(z), "text": "#000" if light else "#fff"})
    corners = (_CORNERS * np.array(supercell, dtype=float)) @ L
    axis_edges = {(a, b): (name, color) for name, (a, b, color) in _AXES.items()}
    edges = [[a, b, *(axis_edges[(a, b)][::-1] if (a, b) in axis_edges else ("#777", ""))] for a, b in _EDGES]
    return {"atoms": atoms, "corners": corners.round(4).tolist(), "edges": edges,
            "center": corners.mean(axis=0).round(4).tolist(), "span": float(np.ptp(corners, axis=0).max() + 2.0),
            "title": title if title is not None else crystal_title(crystal), "labels": bool(labels),
            "legend": [[name, _css_rgb(color)] for name, color in legend_entries(types)]}


class CrystalView:
    """Jupyter-renderable 3D view of one crystal with a static PNG saved alongside (see module docstring).

    crystal: a pymatgen ``Structure`` or a one-crystal ``CrystalBatch`` (masked atoms drawn grey).
    supercell: repeats drawn along a, b, c. labels: element symbols on the atoms (toggle with the L key).
    static: embed the PNG picture (set False only where the picture is not wanted, e.g. many frames).
    """

    def __init__(self, crystal, width: int = 360, height: int = 320, supercell=(1, 1, 1), title: str | None = None,
                 labels: bool = True, static: bool = True):
        self.structure = crystal
        self.width, self.height = width, height
        self.static = static
        self.data = scene_data(crystal, supercell=supercell, title=title, labels=labels)
        self._png: bytes | None = None

    def png(self) -> bytes:
        """The static picture (PNG bytes, computed once)."""
        if self._png is None:
            self._png = crystal_png(self.structure, size=(self.width / 100, self.height / 100), dpi=100,
                                    title=self.data["title"])
        return self._png

    def _repr_html_(self) -> str:
        cid = "mgk-" + uuid.uuid4().hex[:10]
        js = _JS.replace("DATA", json.dumps(self.data)).replace("ID", json.dumps(cid))
        img = ""
        if self.static:
            b64 = base64.b64encode(self.png()).decode()
            img = (f'<img id="{cid}-png" src="data:image/png;base64,{b64}" width="{self.width}" '
                   f'height="{self.height}" alt="{self.data["title"]}"/>')
        return (f'<div class="mgk-crystal-view">{img}<canvas id="{cid}" width="{self.width}" height="{self.height}" '
                f'style="border:1px solid #ddd;display:none"></canvas><script>{js}</script></div>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = {"text/html": self._repr_html_(), "text/plain": f"CrystalView({self.data['title']})"}
        if self.static:
            bundle["image/png"] = base64.b64encode(self.png()).decode()
        return bundle


def view(structure, backend: str = "canvas", **kwargs):
    """Show a crystal inline. ``backend="canvas"`` (default: offline, with a static PNG) or ``"nglview"``
    (nglview's widget with the unit cell; needs its front end and a running kernel, no static image).

    >>> v = view(structure)                          # doctest: +SKIP
    >>> v = view(structure, supercell=(2, 2, 1))     # doctest: +SKIP
    """
    if backend == "canvas":
        return CrystalView(structure, **kwargs)
    if backend == "nglview":
        try:
            import nglview
        except ImportError as err:  # pragma: no cover - depends on the user's install
            raise ImportError("nglview is not installed: pip install nglview==3.1.4 'setuptools<81' "
                              "(4.0.1's front end does not register in JupyterLab 4); view(structure) uses the "
                              "offline canvas viewer") from err
        if kwargs:
            raise TypeError(f"backend='nglview' takes no options, got {sorted(kwargs)}")
        if hasattr(structure, "atom_types"):
            raise TypeError("backend='nglview' draws pymatgen Structures only (masked atoms: use the canvas viewer)")
        widget = nglview.show_pymatgen(structure)
        widget.add_unitcell()  # the cell: ASE's PDB carries CRYST1, NGL draws its edges
        widget.camera = "orthographic"
        return widget
    raise ValueError(f"unknown backend {backend!r}: use 'canvas' or 'nglview'")
