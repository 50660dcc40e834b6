"""Parity of every exportable family, alone and in the weighted ensemble, on binary, multiclass and regression.

Each export runs the real gate: the SavedModel is reloaded with ``tf.saved_model.load`` and compared with
``predict_proba`` / ``predict`` on the test split plus generated adversarial rows.
"""

from __future__ import annotations

import pytest

TOLERANCE = 1e-6
FAMILY_MODELS = {
    "GBM": "LightGBM_BAG_L1",
    "XGB": "XGBoost_BAG_L1",
    "RF": "RandomForest_BAG_L1",
    "XT": "ExtraTrees_BAG_L1",
    "LR": "LinearModel_BAG_L1",
}
CASES = [(task, family) for task in ("binary", "multiclass", "regression") for family in FAMILY_MODELS]
CASES += [("binary", "RF-entropy"), ("multiclass", "RF-entropy")]


def _model_name(family: str) -> str:
    return "RandomForestEntr_BAG_L1" if family == "RF-entropy" else FAMILY_MODELS[family]


def _assert_exact(result) -> None:
    metrics = result.metrics
    assert metrics["parity_max_scaled_diff"] <= TOLERANCE
    assert metrics["label_agreement"] == 1.0
    assert metrics["parity_adversarial_rows"] > 0
    assert metrics["parity_rows_checked"] == metrics["parity_adversarial_rows"] + 150
    assert all(diff <= TOLERANCE for diff in result.metadata["parity_member_diffs"].values())


@pytest.mark.slow
@pytest.mark.parametrize(("task", "family"), CASES)
def test_single_family_matches_autogluon(exported, task: str, family: str) -> None:
    result, savedmodel = exported(task, _model_name(family))
    _assert_exact(result)
    assert (savedmodel / "saved_model.pb").is_file()
    assert result.metadata["families"] == [family.split("-")[0]]
    children = result.metadata["members"][_model_name(family)]["children"]
    assert children == (1 if family.startswith(("RF", "XT")) else 2)  # bagged: 2 folds, forests use OOB


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_weighted_ensemble_matches_autogluon(exported, task: str) -> None:
    result, _ = exported(task)
    _assert_exact(result)
    assert result.model_name == "WeightedEnsemble_L2"
    assert len(result.metadata["members"]) >= 2
    assert abs(sum(m["weight"] for m in result.metadata["members"].values()) - 1.0) < 1e-9
    # AutoGluon rounds every model output to float32; the export reproduces those bits, up to a float32 ulp or
    # two where glibc's expf (XGBoost's sigmoid / softmax) is not correctly rounded.
    if task == "regression":
        assert result.metrics["parity_max_scaled_diff"] <= 2.4e-7
    else:
        assert result.metrics["parity_max_abs_diff"] <= 1.2e-7


def test_binary_label_uses_the_predictor_decision_threshold(predictor_dir, test_split, tmp_path) -> None:
    import numpy as np
    import pandas as pd
    from autogluon.tabular import TabularPredictor

    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    predictor = TabularPredictor.load(str(predictor_dir("binary")), verbosity=0)
    clone = predictor.clone(path=str(tmp_path / "clone"), return_clone=True)
    clone.set_decision_threshold(0.3)
    clone.save()
    result = export(tmp_path / "clone", test_split("binary"), tmp_path / "sm", ExportConfig(), tmp_path / "r.md")
    assert result.metadata["decision_threshold"] == pytest.approx(0.3)
    assert result.metrics["label_agreement"] == 1.0

    frame = pd.read_parquet(test_split("binary")).drop(columns=["label"])
    answer = predict_rows(tmp_path / "sm", {"instances": frame.to_dict("records")})
    labels = np.array([row["label"] for row in answer["predictions"]])
    positive = np.array([row["probabilities"][1] for row in answer["predictions"]]) > np.float32(0.3)
    assert np.array_equal(labels, np.where(positive, "yes", "no"))
    assert np.array_equal(labels, clone.predict(frame).astype(str).to_numpy())
    assert (labels == "yes").sum() > (predictor.predict(frame) == "yes").sum()  # the lower threshold matters
