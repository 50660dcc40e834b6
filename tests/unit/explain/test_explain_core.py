"""``explain()`` end to end on Parquet splits: files, metrics, fallback, errors; and the KFP shell."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.components.explain_shap.core import ExplainConfig, explain
from kfp_tabular.components.explain_shap.explanation import model_outputs
from kfp_tabular.errors import ConfigError, DataValidationError, ModelError


def _outputs(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "values.parquet", folder / "report.html", folder / "summary.md"


def test_exact_explanation_writes_every_output(fit_penguins, splits, tmp_path):
    predictor = fit_penguins("multiclass")
    values_path, report_path, summary_path = _outputs(tmp_path)
    config = ExplainConfig(background_size=30, max_rows=40, seed=1)

    result = explain(Path(predictor.path), splits[0], splits[1], config, values_path, report_path, summary_path)

    features = list(predictor.original_features)
    classes = list(predictor.class_labels)
    assert result.method == "exact_tree"
    assert result.metrics["exact"] == 1.0 and result.metrics["rows_explained"] == 40
    assert result.metrics["max_additivity_error"] <= 1e-6
    assert {f"importance/{f}" for f in features} | {f"base_value/{c}" for c in classes} <= set(result.metrics)

    table = pd.read_parquet(values_path)
    assert list(table.columns) == ["row_id", "feature", "class", "shap_value", "base_value", "feature_value",
                                   "feature_value_numeric"]
    assert len(table) == 40 * len(features) * len(classes)
    test_rows = pd.read_parquet(splits[1])
    explained = test_rows.loc[sorted(table["row_id"].unique()), features]
    rebuilt = (table.groupby(["row_id", "class"])["shap_value"].sum() + table.groupby(["row_id", "class"])[
        "base_value"].first()).unstack()[classes]
    assert np.abs(rebuilt.to_numpy() - model_outputs(predictor, explained)).max() <= 1e-6
    flipper = table[(table.feature == "flipper_length_mm")].iloc[0]
    assert float(flipper.feature_value) == flipper.feature_value_numeric

    html = report_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "http" not in html
    assert len(re.findall(r"data:image/png;base64,", html)) >= 8  # bars, 3 beeswarms, 3 dependence, waterfalls

    summary = summary_path.read_text()
    top = max(features, key=lambda f: result.metrics[f"importance/{f}"])
    assert summary.startswith("**In short:**") and f"**{top}**" in summary.splitlines()[0]
    assert "exact ensemble TreeSHAP" in summary and summary == result.summary_markdown


def test_regression_values_have_no_class_and_say_which_way_features_push(fit_penguins, splits, tmp_path):
    predictor = fit_penguins("regression")
    result = explain(Path(predictor.path), splits[0], splits[1], ExplainConfig(background_size=20, max_rows=15),
                     *_outputs(tmp_path))

    assert result.method == "exact_tree" and len(result.base_values) == 1
    assert "class" not in pd.read_parquet(tmp_path / "values.parquet").columns
    assert re.search(r"higher values (increase|decrease) the predicted body_mass_g", result.summary_markdown)


def test_auto_falls_back_to_permutation_for_other_families(knn_predictor, splits, tmp_path):
    config = ExplainConfig(background_size=10, max_rows=3, sample_budget=32)
    result = explain(Path(knn_predictor.path), splits[0], splits[1], config, *_outputs(tmp_path))

    assert result.method == "permutation" and "KNN" in result.reason
    assert result.metrics["exact"] == 0.0 and result.metrics["max_additivity_error"] <= 1e-6
    assert "PermutationExplainer" in result.summary_markdown and "KNN" in result.summary_markdown


def test_kernel_shap_by_name_is_exact_when_the_budget_covers_every_coalition(knn_predictor, splits, tmp_path):
    config = ExplainConfig(method="kernel", background_size=10, max_rows=3, sample_budget=2**7)  # 7 features
    result = explain(Path(knn_predictor.path), splits[0], splits[1], config, *_outputs(tmp_path))

    assert result.method == "kernel" and result.metrics["exact"] == 1.0
    assert "exact here because its budget" in result.summary_markdown
    assert "EXACT (kernel)" in (tmp_path / "report.html").read_text()


def test_exact_method_on_other_families_fails_cleanly(knn_predictor, splits, tmp_path):
    outputs = _outputs(tmp_path)
    with pytest.raises(ModelError, match="KNN"):
        explain(Path(knn_predictor.path), splits[0], splits[1], ExplainConfig(method="exact_tree", max_rows=3),
                *outputs)
    assert not any(path.exists() for path in outputs)


def test_missing_feature_column_names_it(fit_penguins, splits, tmp_path):
    predictor = fit_penguins("binary")
    broken = tmp_path / "broken.parquet"
    pd.read_parquet(splits[1]).drop(columns=["flipper_length_mm", "island"]).to_parquet(broken)
    outputs = _outputs(tmp_path)

    with pytest.raises(DataValidationError, match=r"flipper_length_mm.*island|island.*flipper_length_mm") as info:
        explain(Path(predictor.path), splits[0], broken, ExplainConfig(max_rows=5), *outputs)
    assert "explain_data" in str(info.value) and str(broken) in str(info.value)
    assert not any(path.exists() for path in outputs)


@pytest.mark.parametrize(
    "settings",
    [{"method": "shapley"}, {"background_size": 0}, {"max_rows": -3}, {"sample_budget": 0}, {"seed": -1}],
)
def test_config_is_validated(settings):
    with pytest.raises(ConfigError):
        ExplainConfig(**settings)


def test_component_shell_logs_metrics_and_metadata(fit_penguins, splits, tmp_path):
    from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model

    from kfp_tabular.components.explain_shap.component import explain_shap, explain_shap_shard

    predictor = fit_penguins("binary")
    artifact = {name: kind(uri=str(tmp_path / name)) for name, kind in
                [("values", Dataset), ("metrics", Metrics), ("report", HTML), ("summary", Markdown)]}
    shards = [Dataset(uri=str(tmp_path / f"shard{index}")) for index in range(2)]
    for index, shard in enumerate(shards):
        explain_shap_shard.python_func(
            model=Model(uri=str(predictor.path)), background_data=Dataset(uri=str(splits[0])),
            explain_data=Dataset(uri=str(splits[1])), shard={"index": float(index), "count": 2.0},
            explanation=shard, background_size=10, max_rows=5)
    assert [s.metadata["rows"] for s in shards] == [2, 3]
    explain_shap.python_func(shards=shards[::-1], shap_values=artifact["values"], metrics=artifact["metrics"],
                             report=artifact["report"], summary=artifact["summary"])

    assert artifact["values"].metadata["method"] == "exact_tree"
    assert artifact["values"].metadata["outputs"] == [str(predictor.positive_class)]
    assert artifact["metrics"].metadata["rows_explained"] == 5
    assert artifact["metrics"].metadata["shards"] == 2
    assert Path(artifact["summary"].path).read_text().startswith("**In short:**")
