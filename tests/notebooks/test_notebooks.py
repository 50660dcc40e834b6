"""Notebooks are executed top to bottom, as a user would run them, in a scratch folder."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(notebook, tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "BLESSED" in text and "No KFP endpoint configured" in text
    assert (tmp_path / "dist" / "tabular_training.yaml").is_file()
