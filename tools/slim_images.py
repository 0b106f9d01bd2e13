"""Shrink the PNG figures kept in the repository: each PNG (a notebook's ``image/png`` outputs, or a ``.png`` file) is
re-encoded as a 256-colour palette PNG when that is smaller (plots use few colours; the text stays sharp).

    python tools/slim_images.py tutorials/*.ipynb notebooks/*.ipynb docs/figures/*.png

Issue 23's repository budget (tests/test_packaging.py checks the tracked tree stays ≤ 35 MiB). Run it after
re-executing a notebook that is committed with its outputs.
"""

import base64
import io
import json
import sys
from pathlib import Path

from PIL import Image


def slim_png(raw: bytes) -> bytes:
    """``raw`` as a palette PNG (median-cut, 256 colours, optimised) if that is smaller, else ``raw``."""
    image = Image.open(io.BytesIO(raw))
    if image.mode == "P":
        return raw
    rgba = image.convert("RGBA")
    has_alpha = rgba.getextrema()[3][0] < 255
    quantised = (rgba.quantize(256, method=Image.Quantize.FASTOCTREE) if has_alpha
                 else rgba.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT))
    out = io.BytesIO()
    quantised.save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(raw) else raw


def slim_notebook(path: Path) -> tuple[int, int]:
    nb = json.loads(path.read_text())
    before = after = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            text = data["image/png"] if isinstance(data["image/png"], str) else "".join(data["image/png"])
            raw = base64.b64decode(text)
            new = slim_png(raw)
            before, after = before + len(raw), after + len(new)
            data["image/png"] = base64.b64encode(new).decode() + "\n"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return before, after


def main(paths) -> int:
    for name in paths:
        path = Path(name)
        if path.suffix == ".ipynb":
            before, after = slim_notebook(path)
        else:
            raw = path.read_bytes()
            new = slim_png(raw)
            path.write_bytes(new)
            before, after = len(raw), len(new)
        print(f"{path}: PNG {before / 1e3:.0f} kB -> {after / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
