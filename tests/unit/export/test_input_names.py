"""Requests to an export whose column names collide once sanitized (`a b`, `a_b`, `a.b`, `A_B`).

The rule under test: a request names each input either by its original column name or by its signature tensor
name; a key that is both (the original name of one column and the tensor name of another) takes the meaning of
the rest of the request, and a request that mixes the two namings around such a key, or sends one input twice,
is refused with a DataValidationError naming the keys.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfp_tabular.errors import DataValidationError

COLUMNS = ["a b", "a_b", "a.b", "A_B"]


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a b": rng.normal(size=n),
        "a_b": rng.normal(size=n),
        "a.b": rng.choice(["p", "q", "r"], size=n),
        "A_B": rng.uniform(-1, 1, size=n),
    })
    # `a b` pushes towards yes and `a_b` towards no: feeding one into the other flips predictions.
    score = 2.0 * frame["a b"] - 2.0 * frame["a_b"] + (frame["a.b"] == "p") + 0.5 * frame["A_B"]
    frame["label"] = np.where(score > 0.3, "yes", "no")
    return frame


def _earlier_release_names(columns: list[str]) -> dict[str, str]:
    """How exports before this release named tensors: in column order, so `a b` took `a_b` from column `a_b`."""
    import re

    used: set[str] = set()
    mapping: dict[str, str] = {}
    for column in columns:
        base = re.sub(r"[^A-Za-z0-9_]", "_", str(column)).strip("_") or "col"
        base = base if base[0].isalpha() else f"f_{base}"
        name, suffix = base, 2
        while name.lower() in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.lower())
        mapping[column] = name
    return mapping


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """(predictor folder with its test split, 40 test rows with the label, AutoGluon's predict_proba on them)."""
    from autogluon.tabular import TabularPredictor

    root = tmp_path_factory.mktemp("colliding")
    predictor = TabularPredictor("label", path=str(root / "ag"), problem_type="binary", verbosity=0).fit(
        _frame(300, 0), hyperparameters={"GBM": {"num_boost_round": 20}}, num_cpus=1, time_limit=60)
    test = _frame(40, 1)
    test.to_parquet(root / "test.parquet")
    return root, test, predictor.predict_proba(test.drop(columns=["label"])).to_numpy()


def _export(root: Path, name: str) -> Path:
    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    export(root / "ag", root / "test.parquet", root / name, ExportConfig(), root / f"{name}.md")
    return root / name


@pytest.fixture(scope="module")
def colliding(fitted) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """An export named as earlier releases named tensors (`a b` -> `a_b`): such models are in use, and the
    request rule must keep them unambiguous."""
    root, test, reference = fitted
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kfp_tabular.components.export_savedmodel.features.sanitize_names", _earlier_release_names)
        savedmodel = _export(root, "sm-earlier")
    return savedmodel, test, reference


def test_current_exports_never_give_a_tensor_another_columns_name(fitted) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    root, test, reference = fitted
    savedmodel = _export(root, "sm")
    names = _tensor_names(savedmodel)
    assert names["a_b"] == "a_b" and not any(name in names and names[name] != name for name in names.values())
    for rows in (json.loads(test.to_json(orient="records")), _rows(test, rename=names)):
        assert np.abs(_probabilities(predict_rows(savedmodel, {"instances": rows})) - reference).max() <= 1e-6
    with pytest.raises(DataValidationError, match=r"not a mix|twice|more than once"):
        predict_rows(savedmodel, {"instances": _rows(test, extra={names["a b"]: "a b"})})


def _tensor_names(savedmodel: Path) -> dict[str, str]:
    from kfp_tabular.components.export_savedmodel.signature import read_signature

    return {c.column: c.name for c in read_signature(savedmodel).inputs}


def _probabilities(answer: dict) -> np.ndarray:
    if "predictions" in answer:
        return np.array([row["probabilities"] for row in answer["predictions"]], dtype=np.float64)
    return np.asarray(answer["outputs"]["probabilities"], dtype=np.float64)


def _rows(test: pd.DataFrame, rename: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> list:
    """JSON rows of the features, keys renamed, plus ``extra`` keys copied from other columns."""
    features = test[COLUMNS]
    rows = json.loads(features.to_json(orient="records"))
    out = []
    for row in rows:
        new = {(rename or {}).get(k, k): v for k, v in row.items()}
        new.update({key: row[source] for key, source in (extra or {}).items()})
        out.append(new)
    return out


def _columns(rows: list[dict]) -> dict[str, list]:
    return {key: [row[key] for row in rows] for key in rows[0]}


def test_the_fixture_has_a_tensor_name_that_is_another_columns_original_name(colliding) -> None:
    savedmodel, test, reference = colliding
    names = _tensor_names(savedmodel)
    assert len(set(names.values())) == 4
    assert any(name in names and names[name] != name for name in names.values())
    # The model uses both `a b` and `a_b`: swapping their values changes the answer.
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    swapped = predict_rows(savedmodel, {"instances": _rows(test, rename={"a b": "a_b", "a_b": "a b"})})
    assert np.abs(_probabilities(swapped) - reference).max() > 0.3


@pytest.mark.parametrize("layout", ["instances", "inputs"])
def test_original_names_and_tensor_names_both_give_autogluon_answers(colliding, layout: str) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, reference = colliding
    by_original = json.loads(test.to_json(orient="records"))  # the label key is ignored
    by_tensor = _rows(test, rename=_tensor_names(savedmodel))
    for rows in (by_original, by_tensor):
        payload = {"instances": rows} if layout == "instances" else {"inputs": _columns(rows)}
        assert np.abs(_probabilities(predict_rows(savedmodel, payload)) - reference).max() <= 1e-6


@pytest.mark.parametrize("layout", ["instances", "inputs"])
def test_original_names_plus_a_tensor_name_are_refused_by_key(colliding, layout: str) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, _ = colliding
    names = _tensor_names(savedmodel)
    extra_key = names["a_b"]  # tensor name of column `a_b`; `a_b` itself is the tensor name of `a b`
    rows = _rows(test, extra={extra_key: "a b"})
    payload = {"instances": rows} if layout == "instances" else {"inputs": _columns(rows)}
    with pytest.raises(DataValidationError) as error:
        predict_rows(savedmodel, payload)
    message = str(error.value)
    assert "'a_b'" in message and repr(extra_key) in message and "'a b'" in message
    assert "not a mix" in message


def test_tensor_names_plus_an_original_name_are_refused(colliding) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, _ = colliding
    rows = _rows(test, rename=_tensor_names(savedmodel), extra={"a.b": "a.b"})
    with pytest.raises(DataValidationError, match="not a mix"):
        predict_rows(savedmodel, {"instances": rows})


def test_one_input_sent_twice_is_refused_even_without_a_shared_name(colliding) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, _ = colliding
    names = _tensor_names(savedmodel)
    # `a_b` by its tensor name only (no key that means two inputs), then `a.b` by both of its names.
    rows = _rows(test, rename={"a_b": names["a_b"]}, extra={names["a.b"]: "a.b"})
    with pytest.raises(DataValidationError) as error:
        predict_rows(savedmodel, {"instances": rows})
    assert "'a.b'" in str(error.value) and repr(names["a.b"]) in str(error.value)


def test_an_unambiguous_mix_is_accepted(colliding) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, reference = colliding
    rows = _rows(test, rename={"a_b": _tensor_names(savedmodel)["a_b"]})  # every key has one meaning
    assert np.abs(_probabilities(predict_rows(savedmodel, {"instances": rows})) - reference).max() <= 1e-6


def test_names_are_case_sensitive_and_the_error_says_so(colliding) -> None:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows

    savedmodel, test, _ = colliding
    rows = _rows(test.head(1), rename={"A_B": "a_B"})
    with pytest.raises(DataValidationError) as error:
        predict_rows(savedmodel, {"instances": rows})
    message = str(error.value)
    assert "missing column(s) ['A_B']" in message and "'a_B'" in message and "case" in message


def test_frame_to_inputs_follows_the_same_rule(colliding) -> None:
    import tensorflow as tf

    from kfp_tabular.components.export_savedmodel.signature import frame_to_inputs, read_signature
    from kfp_tabular.components.export_savedmodel.warmup import predict_request, request_to_tensors

    savedmodel, test, reference = colliding
    signature = read_signature(savedmodel)
    names = _tensor_names(savedmodel)
    by_original = frame_to_inputs(test, signature)
    by_tensor = frame_to_inputs(test[COLUMNS].rename(columns=names), signature)
    assert set(by_original) == set(by_tensor) == set(names.values())
    for name, values in by_original.items():
        assert np.array_equal(values, by_tensor[name])
    function = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    request = predict_request(by_tensor, signature)
    outputs = function(**request_to_tensors(request))
    assert np.abs(outputs["probabilities"].numpy() - reference).max() <= 1e-6

    with pytest.raises(DataValidationError, match="not a mix"):
        frame_to_inputs(test.assign(**{names["a_b"]: test["a b"]}), signature)
    with pytest.raises(DataValidationError, match="not a mix"):
        predict_request({**by_tensor, "a b": by_tensor[names["a b"]]}, signature)


def test_cli_predict_refuses_an_ambiguous_request_without_a_traceback(colliding, tmp_path: Path) -> None:
    savedmodel, test, _ = colliding
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": _rows(test.head(2), extra={_tensor_names(savedmodel)["a_b"]: "a b"})}))
    done = subprocess.run([sys.executable, "-m", "kfp_tabular.cli", "predict", "--model", str(savedmodel),
                           "--json", str(bad)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    # TensorFlow's C++ start-up log (oneDNN, CUDA probing) stays out of the way unless --verbose asks for it
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith("kfp-tabular: error: Instance 0 mixes") and "not a mix" in done.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"instances": _rows(test.head(2))}))
    command = [sys.executable, "-m", "kfp_tabular.cli", "predict", "--model", str(savedmodel), "--json", str(good)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "" and len(json.loads(done.stdout)["predictions"]) == 2
    verbose = subprocess.run([*command, "--verbose"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and verbose.stderr.strip()  # TensorFlow's own log, here


def test_cli_predict_reports_unreadable_json_without_a_traceback(colliding, tmp_path: Path, capsys) -> None:
    from kfp_tabular.cli import main

    savedmodel, _, _ = colliding
    broken = tmp_path / "broken.json"
    broken.write_text('{"instances": [')
    assert main(["predict", "--model", str(savedmodel), "--json", str(broken)]) != 0
    assert "broken.json" in capsys.readouterr().err
    assert main(["predict", "--model", str(savedmodel), "--json", str(tmp_path / "absent.json")]) != 0
    assert "absent.json" in capsys.readouterr().err


def test_label_key_and_lone_shared_key_on_a_hand_made_signature() -> None:
    from kfp_tabular.components.export_savedmodel.signature import InputColumn, SignatureInfo, resolve_keys

    # Label `num_a` is also the tensor name of feature `num a` (sanitize_names does not know the label).
    signature = SignatureInfo((InputColumn("num_a", "num a", "float64", "float"),
                               InputColumn("b", "b", "string", "object")), "binary", {}, label="num_a")
    assert {k: c.column for k, c in resolve_keys(["num a", "b", "num_a"], signature).items()} == {
        "num a": "num a", "b": "b"}  # a test-file row: `num_a` is the label, ignored
    assert resolve_keys(["num_a", "b"], signature)["num_a"].column == "num a"  # by tensor name
    # `a_b` alone: the original name of `a_b` and the tensor name of `a b`; original names win.
    signature = SignatureInfo((InputColumn("a_b", "a b", "float64", "float"),
                               InputColumn("a_b_2", "a_b", "float64", "float")), "regression", {})
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['a b'\] \(tensor names \['a_b'\]\)"):
        resolve_keys(["a_b"], signature, "Instance 0")
