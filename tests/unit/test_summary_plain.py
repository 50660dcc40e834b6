"""The terminal summary of a local run is plain text: the Markdown artifacts' syntax does not reach it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from kfp_tabular.components._shared.markdown import table
from kfp_tabular.components.train_autogluon.core import LEADERBOARD_COLUMNS, render_leaderboard
from kfp_tabular.pipelines.local_run import LocalRun, collect_task_outputs
from kfp_tabular.pipelines.summary import plain_table, plain_text, summarize

MARKDOWN = re.compile(r"\*\*|`|^\s*\|.*\|\s*$|\|\s*-{3}", re.MULTILINE)


def _step(run: Path, name: str, artifacts: dict[str, str], metadata: dict[str, dict] | None = None,
          parameters: dict | None = None) -> None:
    folder = run / name
    folder.mkdir(parents=True)
    for output, text in artifacts.items():
        (folder / output).write_text(text, encoding="utf-8")
    listing = {output: {"artifacts": [{"metadata": (metadata or {}).get(output, {})}]} for output in artifacts}
    document = {"artifacts": listing, "parameterValues": parameters or {}}
    (folder / "executor_output.json").write_text(json.dumps(document), encoding="utf-8")


def _leaderboard() -> str:
    frame = pd.DataFrame({
        "model": ["WeightedEnsemble_L2", "LightGBM", "RandomForest"],
        "score_val": [0.98, 0.97, 0.9],
        "pred_time_val": [0.01, 0.002, 0.03],
        "fit_time": [1.5, 0.4, 0.9],
        "stack_level": [2, 1, 1],
    })
    assert list(frame.columns) == list(LEADERBOARD_COLUMNS)
    return render_leaderboard(frame, "WeightedEnsemble_L2", "accuracy")


def test_plain_table_aligns_columns_and_drops_the_separator_row():
    markdown = table(["model", "score_val"], [["LightGBM", 0.97], ["WeightedEnsemble_L2", 0.9808], ["a|b", 1.0]])
    assert plain_table(markdown.splitlines()) == [
        "model                score_val",
        "LightGBM                  0.97",
        "WeightedEnsemble_L2     0.9808",
        "a|b                          1",
    ]


def test_plain_text_drops_bold_and_code_marks():
    assert plain_text("**Best model:** `WeightedEnsemble_L2`: validation accuracy 0.98") == (
        "Best model: WeightedEnsemble_L2: validation accuracy 0.98"
    )
    assert plain_text("driven mostly by **b**, then **a**") == "driven mostly by b, then a"


def test_summary_of_a_run_has_no_markdown_syntax(tmp_path):
    run = tmp_path / "tabular-training-1"
    profile = ("344 rows × 8 columns, 0.7% missing, 0 duplicate rows, label `species` (multiclass)\n\n"
               "- Source: `builtin://penguins` (csv)\n\n" + table(["column", "type"], [["species", "string"]]))
    _step(run, "ingest-data", {"profile": profile})
    _step(run, "train-autogluon", {"leaderboard": _leaderboard()})
    _step(run, "evaluate-model", {"metrics": ""}, {"metrics": {"accuracy": 0.97}},
          {"Output": True, "reason": "no thresholds or baseline given"})
    summary_md = ("**In short:** the model's predictions are driven mostly by **bill_length_mm** (together 71% of "
                  "the total attribution).\n\nMethod: exact TreeSHAP.\n\n## Global importance\n\n"
                  + table(["feature", "share"], [["bill_length_mm", "71%"]]))
    _step(run, "explain-shap", {"summary": summary_md})
    text = summarize(LocalRun(run, collect_task_outputs(run), started_at=0.0, wall_time_s=1.0))
    assert not MARKDOWN.search(text), MARKDOWN.search(text)
    assert "label species (multiclass)" in text
    assert "Best model: WeightedEnsemble_L2: validation accuracy 0.98" in text
    assert re.search(r"^  model +score_val +pred_time_val", text, re.MULTILINE)
    assert "In short: the model's predictions are driven mostly by bill_length_mm" in text
    # the artifacts keep their Markdown
    assert "| model |" in (run / "train-autogluon" / "leaderboard").read_text()


def test_summary_shows_the_ingest_warnings_the_step_log_would_otherwise_hide(tmp_path):
    # A local run keeps the step logs in a file, so a label copy or an ID column must be named in the summary.
    run = tmp_path / "tabular-training-1"
    profile = ("400 rows × 10 columns, 0.0% missing, 0 duplicate rows, label `label` (binary)\n\n"
               "- Source: `leak.csv` (csv)\n\nWarnings:\n\n"
               "- `label ` has the label's name `label` up to case, spaces and punctuation: it may be a copy of the "
               "label; if so, leave it out with drop_columns='[\"label \"]' (kfp-tabular run --drop-columns)\n"
               "- `id` has a different value in each of the 400 rows: it looks like an ID\n\n"
               + table(["column", "type"], [["label", "string"]]))
    _step(run, "ingest-data", {"profile": profile})
    text = summarize(LocalRun(run, collect_task_outputs(run), started_at=0.0, wall_time_s=1.0))
    block = text.split("WARNINGS", 1)[1].split("\n\n", 1)[0]
    assert "label  has the label's name label" in block
    assert "drop_columns='[\"label \"]' (kfp-tabular run --drop-columns)" in block
    assert "id has a different value in each of the 400 rows" in block
    assert not MARKDOWN.search(text)


def test_summary_has_no_warnings_block_without_warnings(tmp_path):
    run = tmp_path / "tabular-training-1"
    _step(run, "ingest-data", {"profile": "344 rows × 8 columns, label `species`\n\n- Source: `x` (csv)\n"})
    text = summarize(LocalRun(run, collect_task_outputs(run), started_at=0.0, wall_time_s=1.0))
    assert "WARNINGS" not in text
