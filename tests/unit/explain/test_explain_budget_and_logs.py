"""No silent slow path: Kernel SHAP only by name, a time budget, progress lines, no shap / numba lines in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kfp_tabular.components.explain_shap.agnostic import TimeBudgetError, explain_agnostic
from kfp_tabular.components.explain_shap.core import ExplainConfig, explain
from kfp_tabular.errors import ConfigError


def _outputs(folder: Path) -> tuple[Path, Path, Path]:
    return folder / "values.parquet", folder / "report.html", folder / "summary.md"


def test_auto_never_falls_back_to_kernel_even_when_its_budget_covers_every_coalition(knn_predictor, splits,
                                                                                   tmp_path):
    config = ExplainConfig(background_size=10, max_rows=3, sample_budget=2**7)  # penguins: 7 features
    result = explain(Path(knn_predictor.path), splits[0], splits[1], config, *_outputs(tmp_path))

    assert result.method == "permutation" and "KNN" in result.reason


def test_time_budget_stops_the_fallback_with_a_message_naming_the_setting(knn_predictor, splits, tmp_path):
    outputs = _outputs(tmp_path)
    config = ExplainConfig(background_size=10, max_rows=20, sample_budget=32, time_budget_s=1e-3)

    with pytest.raises(TimeBudgetError, match=r"time_budget_s=0\.001.*Raise time_budget_s") as info:
        explain(Path(knn_predictor.path), splits[0], splits[1], config, *outputs)
    assert "20 rows" in str(info.value) and "1 done" in str(info.value)
    assert not any(path.exists() for path in outputs)


@pytest.mark.parametrize("budget", [0, -5.0, float("inf"), True, "300"])
def test_time_budget_is_validated(budget):
    with pytest.raises(ConfigError, match="time_budget_s"):
        ExplainConfig(time_budget_s=budget)


@pytest.mark.parametrize("method", ["kernel", "permutation"])
def test_progress_is_logged_and_shap_and_numba_stay_out_of_the_log(knn_predictor, background_and_rows, caplog,
                                                                 capsys, method):
    background, rows = background_and_rows(knn_predictor)
    caplog.set_level(logging.DEBUG)  # as verbose as any step log could be

    explanation = explain_agnostic(knn_predictor, background.iloc[:5], rows.iloc[:3], method, sample_budget=32,
                                   progress_every_s=0.0)

    assert explanation.values.shape[0] == 3
    ours = [r.getMessage() for r in caplog.records if r.name.endswith("explain_shap.agnostic")]
    assert any("1/3 rows" in line and "rows/s" in line and "ETA" in line for line in ours), ours
    assert any(line.startswith(f"SHAP ({method}): 3/3 rows in") for line in ours), ours
    foreign = [f"{r.name}: {r.getMessage()[:80]}" for r in caplog.records if r.name.split(".")[0] in {"shap", "numba"}]
    assert not foreign
    printed = capsys.readouterr()
    assert "phi" not in printed.out + printed.err
    assert logging.getLogger("shap").level == logging.NOTSET  # the levels are put back afterwards


def test_component_shell_passes_the_budgets_on(knn_predictor, splits, tmp_path):
    from kfp.dsl import Dataset, Model

    from kfp_tabular.components.explain_shap.component import explain_shap_shard

    shard = Dataset(uri=str(tmp_path / "shard"))
    with pytest.raises(TimeBudgetError, match=r"time_budget_s=0\.001.*rows_per_shard"):
        explain_shap_shard.python_func(
            model=Model(uri=str(knn_predictor.path)), background_data=Dataset(uri=str(splits[0])),
            explain_data=Dataset(uri=str(splits[1])), shard={"index": 0, "count": 1}, explanation=shard,
            background_size=5, max_rows=10, sample_budget=16, time_budget_s=0.001,
        )
    assert not Path(shard.path).exists()


def test_exact_method_keeps_shap_and_numba_out_of_the_log(fit_penguins, splits, caplog, tmp_path):
    """numba logs its compiler passes at DEBUG: this bites when the kernels compile (run with an empty
    NUMBA_CACHE_DIR to see it fail without ``quiet_libraries``)."""
    predictor = fit_penguins("binary")
    caplog.set_level(logging.DEBUG)

    result = explain(Path(predictor.path), splits[0], splits[1], ExplainConfig(background_size=10, max_rows=5),
                     *_outputs(tmp_path))

    assert result.method == "exact_tree"
    assert not [r.name for r in caplog.records if r.name.split(".")[0] in {"shap", "numba"}]
