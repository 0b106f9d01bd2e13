"""The notebook experience in a real browser: JupyterLab headless on 127.0.0.1, a notebook with the
GenerationPanel opened in Debian's Chromium (selenium + chromedriver, no browser download), Generate clicked,
the gallery checked, a crystal clicked and its 3D canvas screenshot analysed; a saved, untrusted view output
still shows its static PNG.

Needs ``/usr/bin/chromium`` and ``chromedriver`` (Debian: ``apt-get install -y chromium chromium-driver``) and
``pip install selenium``; otherwise the test is skipped with the reason. ``MATTERGEN_KIT_SCREENSHOTS=DIR`` keeps
the screenshots. Run: ``python -m pytest -rs tests/test_widgets_browser.py``.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _skip_reason() -> str | None:
    if not CHROMIUM or not CHROMEDRIVER:
        return ("browser test skipped: Chromium or chromedriver not found on PATH "
                "(Debian: apt-get install -y chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "browser test skipped: selenium is not installed (pip install selenium)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "browser test skipped: jupyterlab is not installed (pip install 'mattergen_kit[notebook]')"
    return None


REASON = _skip_reason()
if REASON:
    print(REASON, file=sys.stderr)
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PANEL_CELL = """\
import pandas as pd
import mattergen_kit as mk
from mattergen_kit.conditioning.labels import LABEL_TABLE, labels_dir
from mattergen_kit.widgets import GenerationPanel
panel = GenerationPanel(labels=pd.read_csv(labels_dir() / LABEL_TABLE, nrows=300))   # the conditioned bundled model
panel.targets["space_group"].use.value, panel.guidance.value = True, 2.0                # steer toward 225 Fm-3m
panel.num.value, panel.steps.value, panel.batch_size.value, panel.seed.value = 2, 3, 1, "0"
panel"""

TRAJECTORY_CELL = """\
import mattergen_kit as mk
from mattergen_kit.widgets import show_trajectory
crystals, traj = mk.load_model().generate(1, seed=0, steps=20, return_trajectory=True, trajectory_every=5)
show_trajectory(traj, 0, interval_ms=200)"""

NGLVIEW_CELL = """\
import warnings
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
from pymatgen.core import Lattice, Structure
from mattergen_kit.widgets import view
nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
view(nacl, backend="nglview")"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebooks(root: Path) -> None:
    import nbformat
    from pymatgen.core import Lattice, Structure

    from mattergen_kit.widgets import view

    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb = nbformat.v4.new_notebook(metadata=meta)
    nb.cells = [nbformat.v4.new_code_cell(PANEL_CELL)]
    nbformat.write(nb, root / "panel.ipynb")
    # a saved view output, never signed: JupyterLab opens it untrusted, so its script does not run
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cell = nbformat.v4.new_code_cell("view(nacl)", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", data=view(nacl)._repr_mimebundle_(), execution_count=1)]
    nb = nbformat.v4.new_notebook(metadata=meta)
    nb.cells = [nbformat.v4.new_code_cell(TRAJECTORY_CELL)]
    nbformat.write(nb, root / "trajectory.ipynb")
    nb = nbformat.v4.new_notebook(metadata=meta)
    nb.cells = [nbformat.v4.new_code_cell(NGLVIEW_CELL)]
    nbformat.write(nb, root / "nglview.ipynb")
    saved = nbformat.v4.new_notebook(metadata=meta)
    saved.cells = [cell]
    nbformat.write(saved, root / "saved_view.ipynb")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base url, token) of a JupyterLab server on 127.0.0.1 serving a temp folder with the test notebooks."""
    root = tmp_path_factory.mktemp("lab")
    _notebooks(root)
    port, token = _free_port(), "mgk-test-token"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(root / ".jupyter"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
         "--allow-root", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(5))
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(1)
        yield url, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,1400",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(180)
    yield driver
    driver.quit()


def _wait(driver, what, timeout: float, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = what(driver)
        except Exception:  # noqa: BLE001 - elements re-render while the page loads
            found = None
        if found:
            return found
        time.sleep(poll)
    return None


def _buttons(driver, prefix: str):
    from selenium.webdriver.common.by import By

    return [b for b in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea button")
            if b.text.strip().startswith(prefix)]


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def _save(root: Path, name: str, png: bytes) -> Path:
    keep = os.environ.get("MATTERGEN_KIT_SCREENSHOTS")
    folder = Path(keep) if keep else root
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(png)
    print(f"screenshot: {folder / name}")
    return folder / name


def _open_and_run(browser, url: str, root: Path, shot: str) -> None:
    """Open a notebook, wait for its kernel to be idle and run its first cell with the toolbar's Run button."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    editor = _wait(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-InputArea-editor")
                                       if e.is_displayed()], 180)
    assert editor, "the notebook did not open"
    idle = _wait(browser, lambda d: "Idle" in d.find_element(By.ID, "jp-main-statusbar").text, 240)
    _save(root, shot, browser.get_screenshot_as_png())
    assert idle, f"the kernel did not start: {browser.find_element(By.ID, 'jp-main-statusbar').text}"
    time.sleep(2)  # the status bar may still show the previous tab's kernel for a moment

    def shown(css):
        return [e for e in browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]

    assert _wait(browser, lambda d: "Idle" in d.find_element(By.ID, "jp-main-statusbar").text, 240)
    shown(".jp-Notebook .jp-Cell .jp-InputPrompt")[0].click()       # other tabs' notebooks are hidden
    shown('.jp-NotebookPanel-toolbar [data-command="notebook:run-cell-and-select-next"]')[0].click()


def test_panel_generates_in_jupyterlab_and_draws_the_crystal(lab, browser):
    from selenium.webdriver.common.by import By

    url, token, root = lab
    t0 = time.time()
    _open_and_run(browser, f"{url}/lab/tree/panel.ipynb?token={token}", root, "panel_opened.png")
    generate = _wait(browser, lambda d: _buttons(d, "Generate"), 300)
    assert generate, f"the panel did not render: {browser.find_element(By.CSS_SELECTOR, '.jp-Notebook').text[-1500:]}"
    t_panel = time.time() - t0
    generate[0].click()
    cards = _wait(browser, lambda d: (lambda b: b if len(b) == 2 else None)(
        _buttons(d, "0: ") + _buttons(d, "1: ")), 300)
    _save(root, "panel_after_generate.png", browser.get_screenshot_as_png())
    assert cards, f"the gallery did not fill: {browser.find_element(By.CSS_SELECTOR, '.jp-Notebook').text[-1500:]}"
    status = _wait(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".widget-label")
                                       if e.text.startswith("done: 2/2")], 60)
    assert status, "the status never said done"
    cards[1].click()                                               # show crystal 1 in the 3D viewer
    canvas = _wait(browser, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, ".mgk-crystal-view canvas")
                                       if c.is_displayed()], 60)
    assert canvas, "the 3D view did not appear"
    png = canvas[0].screenshot_as_png
    _save(root, "panel_3d_view.png", png)
    _save(root, "panel_full.png", browser.get_screenshot_as_png())
    px = _pixels(png)
    drawn = (np.abs(px - 255).sum(-1) > 60).mean()                 # not white
    colours = len({tuple(c) for c in px.reshape(-1, 3)[::7]})
    print(f"panel shown after {t_panel:.0f} s, total {time.time() - t0:.0f} s; 3D view {px.shape[1]}x{px.shape[0]} px, "
          f"{100 * drawn:.1f}% drawn, {colours} colours")
    assert drawn > 0.03 and colours > 20
    _buttons(browser, "play its denoising")[0].click()              # the crystal's trajectory player in the viewer
    caption = _wait(browser, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-label")
                                        if e.text.startswith("step 0/3")], 60)
    assert caption, "the trajectory player did not appear in the panel's viewer"
    _save(root, "panel_trajectory.png", browser.get_screenshot_as_png())


def test_saved_view_shows_its_static_png_when_untrusted(lab, browser):
    from selenium.webdriver.common.by import By

    url, token, root = lab
    browser.get(f"{url}/lab/tree/saved_view.ipynb?token={token}")
    img = _wait(browser, lambda d: [i for i in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea img")
                                    if i.is_displayed() and i.get_attribute("naturalWidth") not in (None, "0")], 180)
    assert img, f"no static image in the untrusted output: {browser.page_source[-1500:]}"
    png = img[0].screenshot_as_png
    _save(root, "untrusted_saved_view.png", png)
    px = _pixels(png)
    assert (np.abs(px - 255).sum(-1) > 60).mean() > 0.03
    canvases = [c for c in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea canvas") if c.is_displayed()]
    assert not canvases  # the script did not run (untrusted): the picture, not an empty canvas box, is shown


def test_trajectory_player_plays_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.by import By

    url, token, root = lab
    _open_and_run(browser, f"{url}/lab/tree/trajectory.ipynb?token={token}", root, "trajectory_opened.png")

    def caption(d):
        return [e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-label")
                if e.text.startswith("step ")]

    first = _wait(browser, caption, 300)
    assert first and first[0].startswith("step 0/20 · t = 1.000 · 0/"), first
    canvas = _wait(browser, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, ".mgk-crystal-view canvas")
                                       if c.is_displayed()], 60)
    assert canvas, "no 3D view of the first frame"
    before = _pixels(canvas[0].screenshot_as_png)
    _save(root, "trajectory_frame0.png", canvas[0].screenshot_as_png)
    play = [b for b in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-play button")
            if b.is_displayed()]
    play[0].click()                                                   # the Play button runs through the frames
    last = _wait(browser, lambda d: [t for t in caption(d) if t.startswith("step 20/20")], 60)
    assert last, f"Play did not reach the last frame: {caption(browser)}"
    canvas = _wait(browser, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, ".mgk-crystal-view canvas")
                                       if c.is_displayed()], 60)
    png = canvas[0].screenshot_as_png
    _save(root, "trajectory_last_frame.png", png)
    after = _pixels(png)
    grey = lambda px: (np.abs(px - 158).max(-1) < 6).mean()          # noqa: E731 - masked atoms are rgb(158,158,158)
    print(f"trajectory: grey (masked) pixels {100 * grey(before):.1f}% at step 0, {100 * grey(after):.1f}% at step 20")
    assert grey(before) > 0.005 and grey(after) < grey(before) / 5


def test_nglview_backend_renders_in_jupyterlab(lab, browser):
    from selenium.webdriver.common.by import By

    pytest.importorskip("nglview")
    url, token, root = lab
    _open_and_run(browser, f"{url}/lab/tree/nglview.ipynb?token={token}", root, "nglview_opened.png")
    canvas = _wait(browser, lambda d: [c for c in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea canvas")
                                       if c.is_displayed() and c.size["width"] > 100], 180)
    assert canvas, f"nglview drew no canvas: {browser.find_element(By.CSS_SELECTOR, '.jp-Notebook').text[-1500:]}"
    time.sleep(5)  # NGL loads the structure and renders asynchronously
    png = canvas[0].screenshot_as_png
    _save(root, "nglview.png", png)
    px = _pixels(png)
    background = px[0, 0]
    drawn = (np.abs(px - background).sum(-1) > 60).mean()
    cell = (np.abs(px - [232, 168, 38]).sum(-1) < 80).sum()          # NGL's unit cell lines are orange
    print(f"nglview canvas {px.shape[1]}x{px.shape[0]} px, {100 * drawn:.1f}% differs from the background, "
          f"{cell} unit-cell (orange) pixels")
    assert drawn > 0.01 and cell > 100
