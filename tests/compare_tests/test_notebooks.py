"""The notebooks run top to bottom (nbclient + ipykernel) against the tiny studies run by the fixture."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    return nb


def test_analyse_study_notebook(tiny_studies, monkeypatch, tmp_path):
    monkeypatch.setenv("STEEROPT_NOTEBOOK_SPEC", str(tiny_studies["add"]))
    monkeypatch.setenv("STEEROPT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = _execute("analyse-study.ipynb", tmp_path)
    assert (tmp_path / "front.png").stat().st_size > 0 and (tmp_path / "metrics.png").stat().st_size > 0
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "open_ended" in text and "advice" in text  # the sweet-spot table lists both families


def test_compare_controllers_notebook(tiny_studies, monkeypatch, tmp_path):
    monkeypatch.setenv("STEEROPT_NOTEBOOK_SPECS", f"{tiny_studies['add']},{tiny_studies['clamp']}")
    monkeypatch.setenv("STEEROPT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _execute("compare-controllers.ipynb", tmp_path)
    assert (tmp_path / "compare.png").stat().st_size > 0 and "tiny-clamp" in (tmp_path / "table.md").read_text()
