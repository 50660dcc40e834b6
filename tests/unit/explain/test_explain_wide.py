"""Wide tables (issue 10): exact at any width for identity-output members, certified sampling beyond the exact
limit for sigmoid / softmax members, and the exact limit raised past 12 features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components._shared.ensemble import describe_ensemble
from kfp_tabular.components.explain_shap.brute_force import explain_brute_force
from kfp_tabular.components.explain_shap.children import (
    _lightgbm_matrix,
    build_game,
    explain_child,
    native_outputs,
)
from kfp_tabular.components.explain_shap.core import ExplainConfig, explain
from kfp_tabular.components.explain_shap.exact_tree import explain_exact, raw_feature_groups
from kfp_tabular.components.explain_shap.explanation import model_outputs

TOLERANCE = 1e-6
WIDE_FEATURES = 30  # conftest.WIDE_FEATURES


def _split(table: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    train, test = folder / "train.parquet", folder / "test.parquet"
    table.iloc[:240].to_parquet(train, index=False)
    table.iloc[240:].to_parquet(test, index=False)
    return train, test


def _children(predictor, family: str):
    return [c for m in describe_ensemble(predictor, family_model(predictor, family)).members for c in m.children]


def family_model(predictor, family: str) -> str:
    return next(name for name in predictor.model_names() if name.startswith({"GBM": "LightGBM", "RF": "RandomForest",
                                                                             "XT": "ExtraTrees"}[family]))


@pytest.mark.parametrize("problem_type, families", [("regression", ("GBM", "XGB", "RF", "XT", "LR")),
                                                    ("binary", ("RF", "XT"))])
def test_identity_output_ensembles_are_exact_at_30_features(problem_type, families, fit_wide, tmp_path):
    predictor, table = fit_wide(WIDE_FEATURES, problem_type, families)
    outputs = tmp_path / "values.parquet", tmp_path / "report.html", tmp_path / "summary.md"

    result = explain(Path(predictor.path), *_split(table, tmp_path), ExplainConfig(background_size=40, max_rows=30),
                     *outputs)

    assert result.method == "exact_tree", result.reason
    assert result.metrics["exact"] == 1.0 and result.metrics["max_standard_error"] == 0.0
    assert result.metrics["max_additivity_error"] <= result.metrics["additivity_tolerance"]
    assert result.metrics["max_differing_features"] > 12  # past the old cap
    assert "shap_standard_error" not in pd.read_parquet(outputs[0]).columns


@pytest.mark.parametrize("problem_type, family", [("regression", "GBM"), ("regression", "RF"), ("binary", "RF"),
                                                  ("binary", "XT")])
def test_identity_children_match_shap_tree_explainer_at_30_features(problem_type, family, fit_wide):
    """An independent reference: shap's interventional TreeExplainer on the child's own model and encoding."""
    import shap

    families = ("GBM", "XGB", "RF", "XT", "LR") if problem_type == "regression" else ("RF", "XT")
    predictor, table = fit_wide(WIDE_FEATURES, problem_type, families)
    features = list(predictor.original_features)
    x = predictor.transform_features(table[features].iloc[250:262])
    b = predictor.transform_features(table[features].iloc[:30])
    child = _children(predictor, family)[0]
    game = build_game(child, family, problem_type, 1, raw_feature_groups(predictor, features), len(features), x, b)
    ours = explain_child(game, native_outputs(child, x, 1), native_outputs(child, b, 1), 1).values[:, :, 0]

    if family == "GBM":
        booster = child.model
        encode = lambda frame: _lightgbm_matrix(child.preprocess(frame), booster)  # noqa: E731
        reference = shap.TreeExplainer(booster, data=encode(b), feature_perturbation="interventional")
        theirs = reference.shap_values(encode(x), check_additivity=False)
    else:
        encode = lambda frame: np.asarray(child.preprocess(frame), dtype=np.float32).astype(np.float64)  # noqa: E731
        reference = shap.TreeExplainer(child.model, data=encode(b), feature_perturbation="interventional")
        theirs = reference.shap_values(encode(x), check_additivity=False)
        if problem_type == "binary":
            theirs = np.asarray(theirs)[..., list(child.model.classes_).index(1)]
    assert len(child.features) == WIDE_FEATURES  # one encoded column per raw feature, in order
    order = [features.index(f) for f in child.features]
    assert np.abs(ours[:, order] - theirs).max() <= 1e-5 * max(1.0, np.abs(ours).max())  # shap: float32 leaves
    assert np.abs(ours).max() > 0


@pytest.fixture(scope="module")
def fourteen(fit_wide):
    """A 14-feature binary GBM + linear ensemble (sigmoid members), 4 rows, a 5-row background, brute force."""
    predictor, table = fit_wide(14, "binary", ("GBM", "LR"))
    features = list(predictor.original_features)
    background, rows = table[features].iloc[:5], table[features].iloc[250:254]
    return predictor, table, background, rows, explain_brute_force(predictor, background, rows)


def test_exact_limit_is_past_12_features(fourteen):
    predictor, _, background, rows, brute = fourteen
    exact = explain_exact(predictor, background, rows, mode="exact")

    assert exact.exact and exact.stats["max_differing_features"] >= 13
    assert np.abs(exact.values - brute.values).max() <= TOLERANCE
    assert np.abs(exact.reconstruction() - model_outputs(predictor, rows)).max() <= TOLERANCE


def test_sampled_values_are_within_their_standard_errors_of_brute_force(fourteen):
    """Criterion: |estimate − exact| ≤ 4 standard errors for at least 95 % of the sampled values (a calibrated
    normal estimate exceeds 4 SE with probability 6e-5), and the values' root-mean-square z between 0.5 and 1.5
    (errors neither understated nor grossly overstated). Fixed seed; the reference is brute force on 4 rows and
    the exact kernel (equal to brute force above) on 40 rows against 20 background rows."""
    predictor, table, background, rows, brute = fourteen
    target = 2e-3
    sampled = explain_exact(predictor, background, rows, mode="sampled", target_se=target, seed=0)
    features = list(predictor.original_features)
    more_b, more_rows = table[features].iloc[:20], table[features].iloc[240:280]
    sampled_more = explain_exact(predictor, more_b, more_rows, mode="sampled", target_se=target, seed=0)
    exact_more = explain_exact(predictor, more_b, more_rows, mode="exact")

    z = []
    for estimate, reference in ((sampled, brute), (sampled_more, exact_more)):
        assert estimate.method == "sampled_tree" and not estimate.exact
        errors = estimate.standard_errors
        assert errors.max() <= target * 1.0001
        assert np.abs(estimate.values - reference.values)[errors == 0].max(initial=0.0) <= TOLERANCE
        z.append((estimate.values - reference.values)[errors > 0] / errors[errors > 0])
    z = np.concatenate(z)
    assert len(z) >= 300
    assert np.mean(np.abs(z) <= 4) >= 0.95
    assert 0.5 <= np.sqrt(np.mean(z**2)) <= 1.5
    # The walks telescope: additivity is exact, whatever the sampling error.
    assert np.abs(sampled_more.reconstruction() - model_outputs(predictor, more_rows)).max() <= TOLERANCE


def test_auto_samples_a_wide_boosted_classifier_and_reports_the_errors(fit_wide, tmp_path):
    predictor, table = fit_wide(WIDE_FEATURES, "multiclass", ("GBM", "RF"))
    outputs = tmp_path / "values.parquet", tmp_path / "report.html", tmp_path / "summary.md"
    config = ExplainConfig(background_size=30, max_rows=20, target_standard_error=2e-3)

    result = explain(Path(predictor.path), *_split(table, tmp_path), config, *outputs)

    assert result.method == "sampled_tree", result.reason
    assert "LightGBM: sampled: 2^" in result.reason  # which member was sampled, and why
    metrics = result.metrics
    assert metrics["exact"] == 0.0 and 0 < metrics["max_standard_error"] <= 2e-3 * 1.0001
    assert metrics["sampled_operations"] < metrics["exact_operations"]
    assert metrics["max_additivity_error"] <= metrics["additivity_tolerance"]
    values = pd.read_parquet(outputs[0])
    assert list(values.columns)[:5] == ["row_id", "feature", "class", "shap_value", "shap_standard_error"]
    assert values["shap_standard_error"].max() == pytest.approx(metrics["max_standard_error"])
    assert "SAMPLED" in outputs[1].read_text() and "standard error" in result.summary_markdown
