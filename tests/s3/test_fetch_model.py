"""fetch-model against a real S3 server (SeaweedFS) with the minio SDK: a real SavedModel in, TF Serving layout out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kfp_tabular.errors import DataSourceError, ModelError
from kfp_tabular.serving.fetch import fetch_model
from kfp_tabular.serving.verify import list_files, write_manifest

pytestmark = pytest.mark.s3

COMPLETE = "models/tabular/1"
# Half-uploaded versions: what an interrupted `aws s3 cp --recursive` or a failed export upload leaves behind.
HALF_UPLOADED = {
    "no-saved-model-pb": lambda path: path != "saved_model.pb",
    "no-variables-index": lambda path: path != "variables/variables.index",
    "only-saved-model-pb": lambda path: not path.startswith("variables/"),
}


@pytest.fixture(scope="module")
def model_bucket(s3_server, s3_bucket: str, tiny_savedmodel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny SavedModel (with its manifest) uploaded whole under models/tabular/1/, half under half/<case>/2/.

    It reuses the session's bucket: each new bucket is a SeaweedFS collection that takes 7 of the test server's
    8 volume slots, so a second one would fail with HTTP 500.
    """
    model = tmp_path_factory.mktemp("manifested") / "savedmodel"
    shutil.copytree(tiny_savedmodel, model)
    write_manifest(model)
    client = s3_server.client()
    for relpath in list_files(model):
        client.fput_object(s3_bucket, f"{COMPLETE}/{relpath}", str(model / relpath))
        for case, keep in HALF_UPLOADED.items():
            if keep(relpath):
                client.fput_object(s3_bucket, f"half/{case}/2/{relpath}", str(model / relpath))
    return s3_bucket


def assert_nothing_written(dest: Path) -> None:
    assert not dest.exists() or sorted(p.name for p in dest.iterdir()) == [], sorted(dest.iterdir())


def test_fetch_from_s3_gives_a_servable_version_folder(
    s3_env, model_bucket: str, tiny_savedmodel: Path, tmp_path: Path
) -> None:
    import tensorflow as tf

    dest = tmp_path / "models" / "tabular"
    path = fetch_model(f"s3://{model_bucket}/{COMPLETE}", dest)
    assert path == dest / "1"
    assert [p.name for p in dest.iterdir()] == ["1"]
    assert list_files(path).keys() == list_files(tiny_savedmodel).keys() | {"manifest.json"}
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = serve(bill_length_mm=tf.constant([2.0, 45.25], tf.float64), island=tf.constant(["Torgersen", ""]))
    assert out["prediction"].numpy().tolist() == [5.0, 91.5]


def test_refetch_of_identical_model_is_a_no_op(s3_env, model_bucket: str, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    path = fetch_model(f"s3://{model_bucket}/{COMPLETE}/", dest)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.rglob("*")}
    assert fetch_model(f"s3://{model_bucket}/{COMPLETE}", dest) == path
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.rglob("*")} == before
    assert [p.name for p in dest.iterdir()] == ["1"]


@pytest.mark.parametrize("case", sorted(HALF_UPLOADED))
def test_half_uploaded_model_fails_and_leaves_no_version_folder(
    s3_env, model_bucket: str, tmp_path: Path, case: str
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(ModelError) as caught:
        fetch_model(f"s3://{model_bucket}/half/{case}/2", dest)
    expected = {
        "no-saved-model-pb": "is not a complete SavedModel: there is no saved_model.pb",
        "no-variables-index": "is not a complete SavedModel: variables/variables.index is missing",
        # The listing looks complete; the manifest names what is missing before anything big is downloaded.
        "only-saved-model-pb": "does not match its manifest.json: missing ['variables/",
    }[case]
    assert expected in str(caught.value)
    assert f"s3://{model_bucket}/half/{case}/2" in str(caught.value)
    assert_nothing_written(dest)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret", "SignatureDoesNotMatch"),
        ("AWS_ACCESS_KEY_ID", "nobody-knows-me", "InvalidAccessKeyId"),
    ],
)
def test_wrong_credentials_fail_clearly_and_write_nothing(
    s3_env, model_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(variable, value)
    dest = tmp_path / "dest"
    with pytest.raises(DataSourceError, match=expected) as caught:
        fetch_model(f"s3://{model_bucket}/{COMPLETE}", dest)
    assert variable in str(caught.value)
    assert "not-the-secret" not in str(caught.value)
    assert_nothing_written(dest)


def test_missing_bucket_and_empty_prefix(s3_env, model_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="bucket 'no-such-models' does not exist"):
        fetch_model("s3://no-such-models/tabular/1", tmp_path / "a")
    with pytest.raises(DataSourceError, match=f"no files under s3://{model_bucket}/models/tabular/9"):
        fetch_model(f"s3://{model_bucket}/models/tabular/9", tmp_path / "b")
    assert_nothing_written(tmp_path / "a")
    assert_nothing_written(tmp_path / "b")


def test_init_container_command_line(s3_env, model_bucket: str, tmp_path: Path) -> None:
    # The exact command of manifests/base/tf-serving/deployment.yaml, through the installed console script.
    script = Path(sys.executable).with_name("kfp-tabular")
    dest = tmp_path / "models" / "tabular"
    command = [str(script), "fetch-model", "--source-uri", f"s3://{model_bucket}/{COMPLETE}", "--dest", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "published version 1" in done.stdout
    assert (dest / "1" / "variables" / "variables.index").is_file()

    half = [str(script), "fetch-model", "--source-uri", f"s3://{model_bucket}/half/no-variables-index/2",
            "--dest", str(dest)]
    failed = subprocess.run(half, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert failed.returncode != 0
    assert "variables/variables.index is missing" in failed.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["1"]
