"""Edge values at serving time: NaN in columns that had none in training, subnormal numbers, infinities.

TensorFlow on CPU flushes subnormal numbers to zero (``tf.equal(5e-324, 0.0)`` is True), AutoGluon's models do
not; the export must agree with AutoGluon anyway, and refuse what AutoGluon refuses (infinite inputs) with an
error that names the column.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TOLERANCE = 1e-6
SMALLEST_NORMAL = 2.2250738585072014e-308
# Values next to zero that TensorFlow reads as 0 (float64 subnormals) or that round to float32 subnormals.
TINY = [5e-324, -5e-324, 1e-323, 2.2250738585072009e-308, -2.2250738585072009e-308, SMALLEST_NORMAL,
        -SMALLEST_NORMAL, 1e-310, 1e-300, -1e-300, 1e-40, -1e-40, 1.401298464324817e-45, 7.006492321624085e-46,
        1.1754942106924411e-38, 1.1754943508222875e-38]


def _clean_frame(n: int, seed: int) -> pd.DataFrame:
    """Seven plain float columns without missing values, a yes/no label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 7))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(7)])
    score = x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + 0.3 * x[:, 3] * x[:, 4] + rng.normal(scale=0.5, size=n)
    frame["label"] = np.where(score > 0, "yes", "no")
    return frame


def _debt_frame(n: int, seed: int, task: str) -> pd.DataFrame:
    """Skewed columns with many exact zeros (``debt`` >= 0; ``balance`` of both signs), two plain columns."""
    rng = np.random.default_rng(seed)
    debt = np.where(rng.random(n) < 0.5, 0.0, rng.lognormal(8, 1.5, n))
    balance = np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(6, 1.5, n) * np.where(rng.random(n) < 0.3, -1, 1))
    income = rng.normal(50, 15, n)
    ratio = rng.normal(size=n)
    score = (-0.0002 * debt + 0.0005 * balance + 0.05 * income + 0.3 * ratio + (debt == 0) * 1.0
             + (balance == 0) * 0.7 + rng.normal(scale=0.5, size=n))
    frame = pd.DataFrame({"debt": debt, "balance": balance, "income": income, "ratio": ratio})
    frame["label"] = np.where(score > 2.7, "yes", "no") if task == "binary" else score * 10.0
    return frame


def _fit(path: Path, frame: pd.DataFrame, task: str, hyperparameters: dict, **kwargs) -> Path:
    from autogluon.tabular import TabularPredictor

    TabularPredictor("label", path=str(path), problem_type=task, verbosity=0).fit(
        frame, hyperparameters=hyperparameters, num_cpus=1, time_limit=120, **kwargs)
    return path


def _export(model_dir: Path, test: pd.DataFrame, out: Path, model_name: str = ""):
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    out.mkdir(parents=True, exist_ok=True)
    test.to_parquet(out / "test.parquet")
    result = export(model_dir, out / "test.parquet", out / "savedmodel", ExportConfig(model_name=model_name),
                    out / "parity.md")
    return result, out / "savedmodel"


def _serve(savedmodel: Path, frame: pd.DataFrame, signature_name: str = "serving_default") -> dict:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel import parity
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    function = tf.saved_model.load(str(savedmodel)).signatures[signature_name]
    return parity.run_signature(function, read_signature(savedmodel), frame)


def _reference(model_dir: Path, frame: pd.DataFrame, model: str | None = None) -> np.ndarray:
    from autogluon.tabular import TabularPredictor

    predictor = TabularPredictor.load(str(model_dir), verbosity=0)
    if predictor.problem_type == "regression":
        return predictor.predict(frame, model=model).to_numpy()
    return predictor.predict_proba(frame, model=model).to_numpy()


def _assert_same(got: dict, expected: np.ndarray) -> None:
    if "prediction" in got:
        scaled = np.abs(got["prediction"] - expected) / np.maximum(1.0, np.abs(expected))
        assert scaled.max() <= TOLERANCE, scaled.max()
    else:
        assert np.abs(got["probabilities"] - expected).max() <= TOLERANCE


def _rows(base: pd.DataFrame, column: str, values: list[float]) -> pd.DataFrame:
    rows = pd.concat([base.head(1)] * len(values), ignore_index=True)
    rows[column] = np.asarray(values, dtype=np.float64)
    return rows


@pytest.fixture(scope="module")
def clean_lightgbm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean-gbm")
    return _fit(folder / "model", _clean_frame(400, 0).astype({f"x{i}": "float64" for i in range(7)}), "binary",
                {"GBM": {"num_boost_round": 50}})


@pytest.fixture(scope="module")
def debt_predictor(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, Path] = {}

    def get(task: str) -> Path:
        if task not in cache:
            hyperparameters = {"GBM": {"num_boost_round": 40}, "XGB": {"n_estimators": 40},
                               "RF": {"n_estimators": 12}, "LR": {}}
            cache[task] = _fit(tmp_path_factory.mktemp(f"debt-{task}") / "model", _debt_frame(400, 0, task), task,
                               hyperparameters, num_bag_folds=2)
        return cache[task]

    return get


@pytest.fixture(scope="module")
def debt_export(debt_predictor, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[tuple[str, str], tuple] = {}

    def get(task: str, model_name: str = "") -> tuple:
        if (task, model_name) not in cache:
            test = _debt_frame(150, 1, task).drop(columns=["label"])
            out = tmp_path_factory.mktemp(f"debt-export-{task}")
            cache[(task, model_name)] = _export(debt_predictor(task), test, out, model_name)
        return cache[(task, model_name)]

    return get


# ---- 1. NaN in a column that had none in training --------------------------------------------------------------


def test_nan_reads_as_zero_in_trees_whose_splits_have_no_missing_type() -> None:
    """LightGBM ``missing_type=None`` everywhere (clean training data): NaN is compared as 0, not sent left."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.trees import TreeTable, evaluate_trees

    table = TreeTable(n_outputs=1)
    root = table.add_node(feature=0, threshold=-0.5, default_left=True)
    left, right = table.add_node(value=[1.0]), table.add_node(value=[2.0])
    table.link(root, left, right)
    table.add_tree(root, depth=1)
    design = tf.constant([[-1.0], [0.0], [np.nan]])
    leaves = tf.function(lambda d: evaluate_trees(table, d))(design).numpy()[:, 0, 0]
    assert leaves.tolist() == [1.0, 2.0, 2.0]  # NaN -> 0 -> 0 > -0.5 -> right


def test_lightgbm_on_clean_numeric_data_exports_and_reads_nan_like_lightgbm(clean_lightgbm, tmp_path) -> None:
    test = _clean_frame(150, 1).drop(columns=["label"])
    result, savedmodel = _export(clean_lightgbm, test, tmp_path)
    assert result.metrics["parity_max_abs_diff"] <= TOLERANCE
    assert result.metrics["label_agreement"] == 1.0
    rows = pd.concat([_rows(test, column, [np.nan, 0.0, -0.0]) for column in test.columns], ignore_index=True)
    _assert_same(_serve(savedmodel, rows), _reference(clean_lightgbm, rows))


def test_adversarial_rows_hold_nan_and_tiny_values_in_every_numeric_column(clean_lightgbm) -> None:
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.export_savedmodel import parity
    from kfp_tabular.components.export_savedmodel.features import build_feature_plan

    predictor = TabularPredictor.load(str(clean_lightgbm), verbosity=0)
    test = _clean_frame(20, 1).drop(columns=["label"])
    rows = parity.adversarial_rows(test, build_feature_plan(predictor, test), {"x0": [0.25]})
    for column in test.columns:
        values = rows[column].to_numpy()
        assert np.isnan(values).any(), column
        for tiny in (5e-324, -5e-324, 2.2250738585072009e-308, 1.401298464324817e-45, 1e-40):
            assert (values == tiny).any(), (column, tiny)
    assert np.isfinite(rows.to_numpy(dtype=np.float64)[~np.isnan(rows.to_numpy(dtype=np.float64))]).all()
    x0 = rows["x0"].to_numpy()
    assert (x0 == 0.25).any() and (x0 == np.nextafter(0.25, 1.0)).any()
    # the float32 rounding boundary above 0.25 and the doubles on either side of it
    boundary = (0.25 + float(np.nextafter(np.float32(0.25), np.float32(1.0)))) / 2
    assert (x0 == boundary).any() and (x0 == np.nextafter(boundary, 0.0)).any()


@pytest.mark.slow
def test_deployable_preset_on_clean_numeric_data_exports(tmp_path) -> None:
    from kfp_tabular.components.train_autogluon.presets import deployable_fit_kwargs

    kwargs = deployable_fit_kwargs()
    hyperparameters = kwargs.pop("hyperparameters")
    model = _fit(tmp_path / "model", _clean_frame(400, 0), "binary", hyperparameters, **kwargs)
    result, _ = _export(model, _clean_frame(150, 1).drop(columns=["label"]), tmp_path / "export")
    assert result.metrics["parity_max_abs_diff"] <= TOLERANCE
    assert result.metrics["label_agreement"] == 1.0


# ---- 2. decimal columns -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["object", "float64"])
def test_decimal_column_exports_whatever_its_pandas_dtype(tmp_path, dtype: str) -> None:
    """Parquet decimal128(10, 2) reads as Decimal objects (AutoGluon: a category); ingest turns it into float64."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    def split(n: int, seed: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        price, x = np.round(rng.uniform(0, 20, n), 1), rng.normal(size=n)
        label = np.where(price / 10 + x + rng.normal(scale=0.5, size=n) > 1, "yes", "no")
        table = pa.table({"price": pa.array([decimal.Decimal(f"{p:.2f}") for p in price], pa.decimal128(10, 2)),
                          "x": x, "label": label})
        pq.write_table(table, tmp_path / f"{seed}.parquet")
        frame = pd.read_parquet(tmp_path / f"{seed}.parquet")
        return frame.astype({"price": "float64"}) if dtype == "float64" else frame

    model = _fit(tmp_path / "model", split(400, 0), "binary", {"GBM": {"num_boost_round": 50}})
    result, _ = _export(model, split(150, 1).drop(columns=["label"]), tmp_path / "export")
    assert result.metrics["parity_max_abs_diff"] <= TOLERANCE
    assert result.metadata["inputs"]["price"]["dtype"] == ("float64" if dtype == "float64" else "string")


# ---- 3. subnormal numbers --------------------------------------------------------------------------------------


def test_subnormal_inputs_become_the_smallest_normal_number_whatever_tensorflow_flushes() -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.numerics import canonicalize_subnormals

    values = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072009e-308, -1e-310, SMALLEST_NORMAL, 1e-300,
                       np.nan, -3.5])
    out = tf.function(canonicalize_subnormals)(tf.constant(values)).numpy()
    expected = np.array([0.0, -0.0, SMALLEST_NORMAL, -SMALLEST_NORMAL, SMALLEST_NORMAL, -SMALLEST_NORMAL,
                         SMALLEST_NORMAL, 1e-300, np.nan, -3.5])
    np.testing.assert_array_equal(out, expected)
    assert np.signbit(out[1]) and not np.signbit(out[0])


def test_float32_rounding_bound_decides_like_a_float32_cast() -> None:
    from kfp_tabular.components.export_savedmodel.trees import float32_rounding_bound

    rng = np.random.default_rng(0)
    t32 = np.concatenate([rng.normal(size=200).astype(np.float32),
                          np.array([0.0, -0.0, 1.4e-45, -1.4e-45, 1.1754942e-38, 1e-40, -1e-40, 1.0, -1.0,
                                    3.4028235e38, -3.4028235e38], dtype=np.float32)])
    bounds = float32_rounding_bound(t32.astype(np.float64))
    for t, b in zip(t32, bounds, strict=True):
        around = [b, np.nextafter(b, -np.inf), np.nextafter(b, np.inf), float(t), 0.0, -0.0, 5e-324, -5e-324]
        with np.errstate(over="ignore"):
            for x in around:
                assert (np.float32(x) <= t) == (x <= b), (t, b, x)


def _float32_cases() -> np.ndarray:
    rng = np.random.default_rng(1)
    grid = rng.normal(size=500).astype(np.float32)
    ties = (grid.astype(np.float64) + np.nextafter(grid, np.float32(np.inf)).astype(np.float64)) / 2
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, *TINY, 3 * 2.0**-150, 3.4028235677973362e38,
               3.4028235677973366e38, 1e39, -1e300, 0.1, 1 / 3]
    return np.concatenate([special, ties, rng.normal(size=5000) * 10.0 ** rng.integers(-46, 40, size=5000)])


def _float32_module(tmp_path: Path) -> Path:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.numerics import round_to_float32

    class Rounding(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64, name="x")])
        def serve(self, x):
            return {"y": round_to_float32(x)}

    module = Rounding()
    tf.saved_model.save(module, str(tmp_path / "rounding"), signatures={"serving_default": module.serve})
    return tmp_path / "rounding"


def test_float32_rounding_in_float64_keeps_float32_subnormals() -> None:
    """``astype(float32)`` exactly, where a float32 cast in TensorFlow flushes 1e-40 to 0."""
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.numerics import round_to_float32

    x = _float32_cases()
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(tf.function(round_to_float32)(tf.constant(x)).numpy(), expected)  # 0 == -0


@pytest.mark.slow
def test_float32_rounding_survives_tf2onnx(tmp_path) -> None:
    import onnxruntime

    onnx_path = tmp_path / "rounding.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(_float32_module(tmp_path)),
                    "--output", str(onnx_path), "--opset", "17"], check=True, capture_output=True, timeout=300)
    x = _float32_cases()
    (got,) = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, x.astype(np.float32).astype(np.float64))


def test_float32_columns_with_tiny_values_give_autogluon_answers(tmp_path) -> None:
    columns = ["debt", "balance", "income", "ratio"]
    train = _debt_frame(400, 0, "regression").astype(dict.fromkeys(columns, "float32"))
    test = _debt_frame(150, 1, "regression").drop(columns=["label"]).astype(dict.fromkeys(columns, "float32"))
    model = _fit(tmp_path / "model", train, "regression", {"XGB": {"n_estimators": 40}, "LR": {}, "GBM": {}})
    result, savedmodel = _export(model, test, tmp_path / "export")
    assert result.metrics["parity_max_scaled_diff"] <= TOLERANCE
    rows = pd.concat([_rows(test.iloc[[0]], column, [0.0, *TINY]) for column in columns], ignore_index=True)
    _assert_same(_serve(savedmodel, rows), _reference(model, rows))


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_subnormal_and_tiny_values_give_autogluon_answers(debt_export, debt_predictor, task: str) -> None:
    result, savedmodel = debt_export(task)
    assert result.metrics["parity_max_scaled_diff"] <= TOLERANCE
    assert all(diff <= TOLERANCE for diff in result.metadata["parity_member_diffs"].values())
    test = _debt_frame(150, 1, task).drop(columns=["label"])
    rows = pd.concat([_rows(test.iloc[[i]], column, [0.0, -0.0, *TINY]) for i in range(3)
                      for column in ("debt", "balance", "income")], ignore_index=True)
    _assert_same(_serve(savedmodel, rows), _reference(debt_predictor(task), rows))


def test_subnormal_debt_follows_xgboost_not_tensorflow(debt_export, debt_predictor) -> None:
    """debt = 0 is missing for XGBoost (CSR), 5e-324 is a present 0.0f: AutoGluon tells them apart."""
    _, savedmodel = debt_export("regression")
    rows = _rows(_debt_frame(150, 1, "regression").drop(columns=["label"]), "debt", [0.0, 5e-324, 1e-300])
    reference = _reference(debt_predictor("regression"), rows, model="XGBoost_BAG_L1")
    assert reference[0] != reference[1] and reference[1] == reference[2]
    _, xgb_savedmodel = debt_export("regression", "XGBoost_BAG_L1")
    _assert_same(_serve(xgb_savedmodel, rows), reference)
    _assert_same(_serve(savedmodel, rows), _reference(debt_predictor("regression"), rows))


# ---- 4. infinite and too large inputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_input_is_refused_with_the_column_name(debt_export, value: float) -> None:
    import tensorflow as tf

    _, savedmodel = debt_export("binary")
    test = _debt_frame(150, 1, "binary").drop(columns=["label"])
    rows = _rows(test, "income", [1.0, value, np.nan])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)infinite.*`income`.*row.*\[1\]"):
        _serve(savedmodel, rows)
    assert np.isfinite(_serve(savedmodel, rows.drop(index=1))["probabilities"]).all()  # NaN is a missing value


def test_test_rows_the_model_refuses_are_left_out_of_the_gate(clean_lightgbm, tmp_path) -> None:
    """LightGBM alone accepts inf; the export refuses it anyway (one rule), so the gate cannot compare it."""
    import tensorflow as tf

    test = _clean_frame(150, 1).drop(columns=["label"])
    test.loc[[3, 7], "x0"] = [np.inf, -np.inf]
    _reference(clean_lightgbm, test)  # AutoGluon answers
    result, savedmodel = _export(clean_lightgbm, test, tmp_path)
    assert result.metrics["parity_refused_rows"] == 2
    assert result.metrics["parity_max_abs_diff"] <= TOLERANCE
    assert "2 test row(s) hold values the exported model refuses" in result.report_markdown
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)infinite.*`x0`.*row.*\[3\]"):
        _serve(savedmodel, test)


def test_value_too_large_for_float32_is_refused_like_scikit_learn(debt_export, debt_predictor) -> None:
    import tensorflow as tf

    _, savedmodel = debt_export("regression")
    rows = _rows(_debt_frame(150, 1, "regression").drop(columns=["label"]), "ratio", [1e308])
    with pytest.raises(ValueError, match="too large"):
        _reference(debt_predictor("regression"), rows)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)float32.*RandomForest.*`ratio`"):
        _serve(savedmodel, rows)
    limit = _rows(_debt_frame(150, 1, "regression").drop(columns=["label"]), "ratio", [3.4028235e38, -3.4028235e38])
    _reference(debt_predictor("regression"), limit, model="RandomForest_BAG_L1")  # accepted by AutoGluon
    _, forest = debt_export("regression", "RandomForest_BAG_L1")
    _assert_same(_serve(forest, limit), _reference(debt_predictor("regression"), limit, model="RandomForest_BAG_L1"))


def test_non_finite_prediction_is_refused(debt_export, debt_predictor) -> None:
    import tensorflow as tf

    _, savedmodel = debt_export("regression", "LinearModel_BAG_L1")
    rows = _rows(_debt_frame(150, 1, "regression").drop(columns=["label"]), "income", [1e308, 50.0])
    assert not np.isfinite(_reference(debt_predictor("regression"), rows, model="LinearModel_BAG_L1")[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)not finite.*`prediction`.*row.*\[0\]"):
        _serve(savedmodel, rows)


# ---- the ONNX path -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_onnx_conversion_keeps_subnormals_and_marks_refused_rows(debt_export, debt_predictor, tmp_path) -> None:
    """tf2onnx has no Bitcast: it converts the ``onnx`` signature, the graph without the flush guard."""
    import onnx
    import onnxruntime

    from kfp_tabular.components.export_savedmodel.graph import PORTABLE_SIGNATURE_KEY
    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature

    _, savedmodel = debt_export("regression")
    onnx_path = tmp_path / "model.onnx"
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel), "--signature_def",
                    PORTABLE_SIGNATURE_KEY, "--output", str(onnx_path), "--opset", "17"],
                   check=True, capture_output=True, timeout=300)
    assert "Bitcast" not in {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    test = _debt_frame(150, 1, "regression").drop(columns=["label"])
    rows = pd.concat([_rows(test.iloc[[i]], column, [0.0, *TINY]) for i in range(2)
                      for column in ("debt", "balance")], ignore_index=True)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    signature = read_signature(savedmodel)
    (prediction,) = session.run(["prediction"], frame_to_inputs(rows, signature))
    _assert_same({"prediction": prediction}, _reference(debt_predictor("regression"), rows))
    refused = _rows(test, "income", [np.inf, 1.0])
    (prediction,) = session.run(["prediction"], frame_to_inputs(refused, signature))
    assert np.isnan(prediction[0]) and np.isfinite(prediction[1])

