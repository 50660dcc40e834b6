"""Notebooks are executed top to bottom, as a user would run them, in a scratch folder."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
# What each notebook must have printed, and the files it must have left, when run top to bottom.
EXPECTED = {
    "01_quickstart.ipynb": (("BLESSED", "No KFP endpoint configured"), ("dist/tabular_training.yaml",)),
    "02_publish_serve_and_query.ipynb": (
        ("published", "gRPC labels:", "[('2', 'AVAILABLE'), ('1', 'END')]", ':tensorflow:serving:request_count{model_name="penguins"'),
        ("models/penguins/1/manifest.json", "models/penguins/2/manifest.json"),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_without_errors(notebook, tmp_path, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    printed, files = EXPECTED[notebook.name]
    for expected in printed:
        assert expected in text, expected
    for relpath in files:
        assert (tmp_path / relpath).is_file(), relpath
