"""Notebooks are executed top to bottom, as a user would run them, in a scratch folder."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# Run with a cluster to deploy to (the Kubernetes double and SeaweedFS): tests/deploy/test_notebook_deploy.py.
CLUSTER_NOTEBOOKS = {"02_deploy_and_query.ipynb"}
NOTEBOOKS = sorted(p for p in (Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb")
                   if p.name not in CLUSTER_NOTEBOOKS)
# What each notebook must have printed, and the files it must have left, when run top to bottom.
EXPECTED = {
    "01_quickstart.ipynb": (("BLESSED", "No KFP endpoint configured"), ("dist/tabular_training.yaml",)),
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


def test_quickstart_submit_cell_submits_to_the_kfp_api_double(tmp_path, monkeypatch):
    """The quickstart's setup and submit cells against the KFP API TEST DOUBLE, as in a notebook server
    with the access-ml-pipeline PodDefault (KF_PIPELINES_SA_TOKEN_PATH) in a multi-user install."""
    from doubles.kfp_api import KfpApiDouble

    (tmp_path / "token").write_text("projected-token\n")
    nb = nbformat.read(NOTEBOOKS[0].parent / "01_quickstart.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code" and ("import kfp_tabular" in c.source
                                                                   or "submit_run(" in c.source)]
    assert len(nb.cells) == 2
    with KfpApiDouble(profiles=("team-a",), token="projected-token") as api:
        monkeypatch.setenv("KFP_HOST", api.url)
        monkeypatch.setenv("KFP_NAMESPACE", "team-a")
        monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    (run,) = api.runs.values()
    assert f"{api.url}/#/runs/details/{run.body['run_id']}" in "".join(o.get("text", "") for o in outputs)
    assert run.body["runtime_config"]["parameters"] == {"source_uri": "s3://datasets/penguins.csv", "label": "species"}
    assert [e["namespace"] for e in api.experiments.values()] == ["team-a"]
