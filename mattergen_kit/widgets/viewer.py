"""Interactive 3D crystal view for notebooks that needs no CDN and no front-end extension.

``view(structure)`` returns an object that Jupyter renders as a self-contained HTML ``<canvas>`` with a
few lines of inline JavaScript: drag to rotate, wheel to zoom. Everything (atoms, colours, cell edges)
is embedded in the cell output, so it works offline, in JupyterLab 4, in VS Code and in exported HTML.
``view(structure, backend="nglview")`` uses nglview (3.1.4 works in JupyterLab 4) when installed.
"""

from __future__ import annotations

import itertools
import json
import uuid

import numpy as np

from mattergen_kit.widgets.render import _CORNERS, _EDGES, _element_style

_JS = r"""
(function(){
const d = DATA, cv = document.getElementById(ID), ctx = cv.getContext('2d');
let ax = 0.5, ay = -0.6, zoom = 1.0, drag = null;
const c = d.center;
function rot(p){ const x=p[0]-c[0], y=p[1]-c[1], z=p[2]-c[2];
  const x1 = Math.cos(ay)*x + Math.sin(ay)*z, z1 = -Math.sin(ay)*x + Math.cos(ay)*z;
  const y2 = Math.cos(ax)*y - Math.sin(ax)*z1, z2 = Math.sin(ax)*y + Math.cos(ax)*z1;
  return [x1, y2, z2]; }
function draw(){
  const W = cv.width, H = cv.height, s = zoom*0.8*Math.min(W,H)/d.span;
  ctx.clearRect(0,0,W,H); ctx.lineWidth = 1; ctx.strokeStyle = '#666';
  for (const e of d.edges){ const a = rot(d.corners[e[0]]), b = rot(d.corners[e[1]]);
    ctx.beginPath(); ctx.moveTo(W/2+s*a[0], H/2-s*a[1]); ctx.lineTo(W/2+s*b[0], H/2-s*b[1]); ctx.stroke(); }
  const pts = d.atoms.map(a => [rot(a.xyz), a]).sort((p,q) => p[0][2]-q[0][2]);
  for (const [p,a] of pts){ ctx.beginPath(); ctx.arc(W/2+s*p[0], H/2-s*p[1], Math.max(2, s*a.r), 0, 2*Math.PI);
    ctx.fillStyle = a.color; ctx.fill(); ctx.strokeStyle = '#222'; ctx.stroke(); }
  ctx.fillStyle = '#000'; ctx.font = '12px sans-serif'; ctx.fillText(d.title, 6, 14);
}
cv.onmousedown = e => drag = [e.clientX, e.clientY];
window.addEventListener('mouseup', () => drag = null);
cv.onmousemove = e => { if(!drag) return; ay += (e.clientX-drag[0])*0.01; ax += (e.clientY-drag[1])*0.01;
  drag = [e.clientX, e.clientY]; draw(); };
cv.onwheel = e => { e.preventDefault(); zoom *= e.deltaY < 0 ? 1.1 : 0.9; draw(); };
draw();
})();
"""


class CrystalView:
    """Jupyter-renderable 3D view of one structure (see module docstring)."""

    def __init__(self, structure, width: int = 360, height: int = 320, supercell=(1, 1, 1)):
        self.structure = structure
        self.width, self.height = width, height
        L = np.asarray(structure.lattice.matrix)
        atoms = []
        for shift in itertools.product(*(range(n) for n in supercell)):
            for site in structure:
                xyz = (np.mod(site.frac_coords, 1.0) + np.array(shift)) @ L
                color, radius = _element_style(site.specie.Z)
                rgb = (np.asarray(color) * 255).astype(int)
                atoms.append({"xyz": xyz.round(4).tolist(), "r": round(0.5 * radius, 3),
                              "color": "rgb({},{},{})".format(*rgb), "el": site.specie.symbol})
        corners = (_CORNERS * np.array(supercell, dtype=float)) @ L
        self.data = {"atoms": atoms, "corners": corners.round(4).tolist(), "edges": _EDGES,
                     "center": corners.mean(axis=0).round(4).tolist(),
                     "span": float(np.ptp(corners, axis=0).max() + 2.0),
                     "title": f"{structure.composition.reduced_formula}  ({len(structure)} atoms)"}

    def _repr_html_(self) -> str:
        cid = "mgk-" + uuid.uuid4().hex[:10]
        js = _JS.replace("DATA", json.dumps(self.data)).replace("ID", json.dumps(cid))
        return (f'<canvas id="{cid}" width="{self.width}" height="{self.height}" '
                f'style="border:1px solid #ddd"></canvas><script>{js}</script>')


def view(structure, backend: str = "canvas", **kwargs):
    """Show a structure inline. ``backend="canvas"`` (default, offline) or ``"nglview"``."""
    if backend == "canvas":
        return CrystalView(structure, **kwargs)
    if backend == "nglview":
        try:
            import nglview
        except ImportError as err:  # pragma: no cover - depends on the user's install
            raise ImportError("nglview is not installed: pip install nglview==3.1.4 'setuptools<81' "
                              "(4.0.1's front end does not register in JupyterLab 4)") from err
        return nglview.show_pymatgen(structure)
    raise ValueError(f"unknown backend {backend!r}: use 'canvas' or 'nglview'")
