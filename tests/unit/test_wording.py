"""Wording defects: a message that ends in a period never gets another one, and a constant model's summary."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components.explain_shap.core import method_text
from kfp_tabular.components.explain_shap.explanation import Explanation
from kfp_tabular.components.explain_shap.summary import summarize
from kfp_tabular.text import clause, sentence

ROOT = Path(__file__).resolve().parents[2]
# where a message is composed from another message (an exception, a reason)
COMPOSING = sorted(path for folder in ("components", "pipelines", "src/kfp_tabular")
                   for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts)
MESSAGE_NAMES = re.compile(r"^(exc|error|err|reason|message|msg|note|cause)$")


def _explanation(values: np.ndarray, method: str = "permutation", exact: bool = False) -> Explanation:
    return Explanation(values=values, base_values=np.array([0.25, 0.75]), features=["a", "b"],
                       outputs=["no", "yes"], method=method, exact=exact)


def test_clause_and_sentence_end_with_exactly_one_period():
    assert sentence("the model does not model.") == "the model does not model."
    assert sentence("no period") == "no period."
    assert clause("ends here. ") == "ends here"
    assert f"because {clause('x is wrong.')}. Next" == "because x is wrong. Next"


def test_method_text_with_a_reason_ending_in_a_period_has_no_double_period():
    values = np.zeros((4, 2, 2))
    reason = ("exact SHAP is not available: Exact SHAP does not add up to the predictor's output (error 0.1); "
              "the ensemble has a step this method does not model.")
    text = method_text(_explanation(values), "multiclass", reason, 10, 1e-9, 512)
    assert ".." not in text
    assert "does not model. Output explained: the probability of each class." in text


@pytest.mark.parametrize("path", COMPOSING, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_message_appends_a_period_to_an_interpolated_message(path):
    """The class of defect: ``f"...: {exc}. Do this"`` doubles the period of an exception that ends in one."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.JoinedStr):
            continue
        for value, after in zip(node.values, node.values[1:], strict=False):
            if (isinstance(value, ast.FormattedValue) and value.format_spec is None  # a number has a spec
                    and isinstance(value.value, ast.Name) and MESSAGE_NAMES.match(value.value.id) and isinstance(after, ast.Constant)
                    and str(after.value).startswith(".")):
                found.append(f"line {node.lineno}: {{{value.value.id}}}.")
    assert not found, f"wrap the interpolated message in kfp_tabular.text.clause(): {found}"


def test_a_constant_model_is_summarised_as_constant_not_as_driven_by_features():
    rows = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "y"]})
    text = summarize(_explanation(np.zeros((4, 2, 2))), rows, "binary", ["no", "yes"], "Method: test.")
    first = text.splitlines()[0]
    assert "driven mostly" not in text and "0% of the total attribution" not in text
    assert first == ("**In short:** the model gives the same output for every explained row: no feature moves "
                     "it (every SHAP value is 0).")
    assert "## How the main features push the prediction" not in text


def test_features_without_effect_are_not_named_as_drivers():
    values = np.zeros((4, 2, 2))
    values[:, 0, :] = [[0.1, -0.1], [-0.1, 0.1], [0.2, -0.2], [-0.2, 0.2]]
    rows = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": ["x", "y", "x", "y"]})
    first = summarize(_explanation(values), rows, "binary", ["no", "yes"], "Method: test.").splitlines()[0]
    assert first == ("**In short:** the model's predictions are driven mostly by **a** (together 100% of the "
                     "total attribution).")
