"""Every notebook in tutorials/ and notebooks/ runs end to end (small settings through MGK_* variables)."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("tutorials/*.ipynb"), *ROOT.glob("notebooks/*.ipynb")])
SMALL = {"MGK_NUM": "4", "MGK_STEPS": "20", "MGK_SMALL": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    for key, value in SMALL.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MGK_OUT", str(tmp_path / "out"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_there_are_notebooks_to_run():
    assert any(p.parent.name == "tutorials" for p in NOTEBOOKS)
