"""The analysts' notebooks run on the demo province (so they never rot) and are kept without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gis_ioc.settings import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_three_notebooks():
    assert len(NOTEBOOKS) == 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_kept_without_outputs(path: Path):
    book = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(book.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_demo(path: Path, demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GIS_IOC_DATABASE_URL", demo_url)  # the kernel reads the settings as the server does
    monkeypatch.setenv("GIS_IOC_HOME", str(tmp_path / "home"))
    book = nbformat.read(path, as_version=4)
    assert book.cells[0].cell_type == "markdown" and "**Question.**" in book.cells[0].source
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # a failing cell raises
    answer = "".join(out.get("text", "") for out in book.cells[-1].get("outputs", []))
    assert len(answer) > 80 and answer.strip().endswith("."), answer
