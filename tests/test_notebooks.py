"""Every notebook in notebooks/ runs top to bottom without error, showing its figures.

Notebooks read ``RERANK_ENV_NOTEBOOK_BUDGET`` (``"quick"`` by default) for their
training sizes; the tests run them at ``"tiny"``.
"""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: Notebooks that print tables only.
WITHOUT_FIGURES = {"00_data_pipeline.ipynb"}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RERANK_ENV_DATA", str(data_root))
    monkeypatch.setenv("RERANK_ENV_NOTEBOOK_BUDGET", "tiny")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert figures or path.name in WITHOUT_FIGURES, f"{path.name} shows no figure"


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS
