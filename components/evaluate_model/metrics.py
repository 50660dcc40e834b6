"""Test-set metrics of ``evaluate_model``, computed with scikit-learn from labels and probabilities.

Pure functions of arrays, so they can be checked against scikit-learn without a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "log_loss", "f1_macro", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# Metrics where lower is better; every other metric is better when higher.
ERROR_METRICS = frozenset({"rmse", "mae", "log_loss"})
# The dashboard draws the ROC curve from a list stored in MLMD: a few hundred points are plenty.
MAX_ROC_POINTS = 200
# Classes named in the confusion matrix and the per-class table; beyond this the dashboard's matrix is unreadable
# and the report's figure costs O(classes^2) text labels (1000 classes: minutes and gigabytes).
MAX_CLASSES_SHOWN = 30
OTHER_CLASSES = "(other)"


def _positive_index(classes: Sequence[Any], positive_class: Any) -> int:
    classes = list(classes)
    if positive_class not in classes:
        raise ValueError(f"positive class {positive_class!r} is not one of the classes {classes}")
    return classes.index(positive_class)


def compute_metrics(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    proba: Any,
    problem_type: str,
    classes: Sequence[Any] | None,
    positive_class: Any = None,
) -> dict[str, float]:
    """Metrics of predictions against true values, plus ``test_rows``.

    Args:
        y_true: True labels (classification) or values (regression).
        y_pred: Predicted labels or values.
        proba: Class probabilities, shape ``(rows, len(classes))`` with columns in ``classes`` order;
            rows are renormalized to sum to 1. Ignored for regression.
        problem_type: ``binary``, ``multiclass`` or ``regression``.
        classes: Class labels in the column order of ``proba`` (``None`` for regression).
        positive_class: The class whose probability is the score of ``roc_auc`` (binary only).

    Returns:
        Classification: ``accuracy``, ``balanced_accuracy``, ``log_loss`` (over all ``classes``), ``f1_macro``
        and, for binary tasks whose test labels hold both classes, ``roc_auc``. Regression: ``rmse``, ``mae``
        and, with at least two rows, ``r2``.
    """
    import numpy as np
    from sklearn import metrics as skm

    y_true_array = np.asarray(y_true)
    y_pred_array = np.asarray(y_pred)
    result: dict[str, float] = {}
    if problem_type in ("binary", "multiclass"):
        if classes is None:
            raise ValueError("classification metrics need the class order of the probabilities")
        probabilities = np.asarray(proba, dtype=float)
        # AutoGluon's float32 rows sum to 1 only within rounding, which scikit-learn warns about.
        probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
        result["accuracy"] = skm.accuracy_score(y_true_array, y_pred_array)
        # = balanced_accuracy_score, without the dense classes x classes confusion matrix it builds.
        result["balanced_accuracy"] = skm.recall_score(
            y_true_array, y_pred_array, labels=np.unique(y_true_array), average="macro", zero_division=0
        )
        result["log_loss"] = skm.log_loss(y_true_array, probabilities, labels=list(classes))
        result["f1_macro"] = skm.f1_score(y_true_array, y_pred_array, average="macro", zero_division=0)
        if problem_type == "binary":
            positive = _positive_index(classes, positive_class)
            is_positive = y_true_array == classes[positive]
            # AUC is undefined when the test split holds a single class.
            if 0 < is_positive.sum() < len(is_positive):
                result["roc_auc"] = skm.roc_auc_score(is_positive, probabilities[:, positive])
    elif problem_type == "regression":
        y_true_float = y_true_array.astype(float)
        y_pred_float = y_pred_array.astype(float)
        result["rmse"] = math.sqrt(skm.mean_squared_error(y_true_float, y_pred_float))
        result["mae"] = skm.mean_absolute_error(y_true_float, y_pred_float)
        if len(y_true_float) >= 2:
            result["r2"] = skm.r2_score(y_true_float, y_pred_float)
    else:
        raise ValueError(f"problem type {problem_type!r} is not binary, multiclass or regression")
    result["test_rows"] = float(len(y_true_array))
    return {name: float(value) for name, value in result.items()}


def shown_classes(
    y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any], limit: int = MAX_CLASSES_SHOWN
) -> list[Any]:
    """The classes named in the confusion matrix and per-class table, in ``classes`` order.

    All of them when there are at most ``limit``; else the ``limit`` with the most test rows (ties: the most
    predicted, then the first in ``classes``).
    """
    import numpy as np
    import pandas as pd

    classes = list(classes)
    if len(classes) <= limit:
        return classes
    index = pd.Index(classes)
    true_counts = np.bincount(_codes(index, y_true), minlength=len(classes) + 1)[: len(classes)]
    pred_counts = np.bincount(_codes(index, y_pred), minlength=len(classes) + 1)[: len(classes)]
    order = np.lexsort((np.arange(len(classes)), -pred_counts, -true_counts))
    return [classes[i] for i in sorted(order[:limit])]


def _codes(index: Any, values: Sequence[Any]) -> Any:
    """Position of each value in ``index``; values not in it get ``len(index)``."""
    import numpy as np

    codes = index.get_indexer(list(values))
    return np.where(codes < 0, len(index), codes)


def bounded_confusion(
    y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any], limit: int = MAX_CLASSES_SHOWN
) -> tuple[list[str], list[list[int]]]:
    """Confusion matrix over ``shown_classes`` plus, when some are left out, one ``(other)`` row and column.

    Linear in the rows, quadratic only in ``limit``. Returns the row/column labels (strings) and the counts:
    rows are true classes, columns predicted ones; the ``(other)`` cells sum every left-out class.
    """
    import numpy as np
    import pandas as pd

    shown = shown_classes(y_true, y_pred, classes, limit)
    labels = [str(name) for name in shown]
    size = len(shown)
    if size < len(classes):
        other = OTHER_CLASSES
        while other in labels:  # a real class may carry that name
            other = f"({other})"
        labels.append(other)
        size += 1
    index = pd.Index(shown)
    true_codes, pred_codes = _codes(index, y_true), _codes(index, y_pred)
    if size == len(shown):  # nothing left out: like scikit-learn, ignore values that are not classes
        known = (true_codes < size) & (pred_codes < size)
        true_codes, pred_codes = true_codes[known], pred_codes[known]
    counts = np.bincount(true_codes * size + pred_codes, minlength=size * size).reshape(size, size)
    return labels, [[int(count) for count in row] for row in counts]


def per_class_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], shown: Sequence[Any]) -> list[list[Any]]:
    """``[class, precision, recall, f1, test rows]`` for each class in ``shown``."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        list(y_true), list(y_pred), labels=list(shown), zero_division=0
    )
    return [[str(name), float(p), float(r), float(f), int(s)]
            for name, p, r, f, s in zip(shown, precision, recall, f1, support, strict=True)]


def roc_points(
    y_true: Sequence[Any],
    positive_scores: Sequence[float],
    positive_class: Any,
    max_points: int = MAX_ROC_POINTS,
) -> tuple[list[float], list[float], list[float]] | None:
    """ROC curve as ``(fpr, tpr, thresholds)``, at most ``max_points`` points, every value finite.

    scikit-learn starts the thresholds at ``inf`` (the point where nothing is positive); KFP stores metadata
    as JSON, which has no infinity, so that threshold becomes 1.0, the largest probability. Returns ``None``
    when the test labels hold a single class (the curve is undefined).
    """
    import numpy as np
    from sklearn.metrics import roc_curve

    is_positive = np.asarray(y_true) == positive_class
    if is_positive.all() or not is_positive.any():
        return None
    fpr, tpr, thresholds = roc_curve(is_positive, np.asarray(positive_scores, dtype=float))
    thresholds = np.clip(np.nan_to_num(thresholds, nan=1.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if len(fpr) > max_points:
        # Keep both ends and spread the rest evenly along the curve.
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr], [float(v) for v in thresholds]
