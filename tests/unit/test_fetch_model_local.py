"""fetch-model from a local folder: TF Serving layout, verification, atomicity, idempotency, CLI (real TensorFlow)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kfp_tabular.cli import main
from kfp_tabular.errors import ConfigError, DataSourceError, IntegrityError, ModelError
from kfp_tabular.serving import fetch
from kfp_tabular.serving.fetch import fetch_model, model_version
from kfp_tabular.serving.protowire import saved_model_outline
from kfp_tabular.serving.verify import list_files, verify_savedmodel, write_manifest


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


@pytest.fixture
def model(tiny_savedmodel: Path, tmp_path: Path) -> Path:
    """A private copy named like a version folder, with the manifest export and publish write; tests may damage it."""
    copy = tmp_path / "source" / "7"
    shutil.copytree(tiny_savedmodel, copy)
    write_manifest(copy)
    return copy


def predict(folder: Path) -> list[float]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    out = serve(bill_length_mm=tf.constant([1.0, 40.5], tf.float64), island=tf.constant(["Biscoe", "Dream"]))
    return out["prediction"].numpy().tolist()


def test_local_folder_lands_in_tf_serving_layout_and_still_predicts(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "tabular"
    path = fetch_model(str(model), dest)
    assert path == dest / "7"
    assert leftovers(dest) == ["7"]  # no staging folder left behind
    assert list_files(path) == list_files(model)
    assert (path / "saved_model.pb").read_bytes() == (model / "saved_model.pb").read_bytes()
    assert predict(path) == [3.0, 82.0]


def test_file_uri_and_explicit_version(model: Path, tmp_path: Path) -> None:
    unversioned = model.rename(model.with_name("savedmodel"))
    path = fetch_model(unversioned.as_uri(), tmp_path / "dest", version=4)
    assert path.name == "4"
    assert verify_savedmodel(path, require_manifest=True).signatures == ("serving_default",)


def test_a_folder_without_manifest_is_refused_unless_explicitly_allowed(tiny_savedmodel: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match=r"has no manifest\.json") as caught:
        fetch_model(str(tiny_savedmodel), dest, version=1)
    assert "publish" in str(caught.value) and "--allow-missing-manifest" in str(caught.value)
    assert leftovers(dest) == []
    # A local export of an older kfp-tabular has none: still checked for completeness, on request only.
    assert fetch_model(str(tiny_savedmodel), dest, version=1, require_manifest=False) == dest / "1"
    with pytest.raises(ConfigError, match="s3:// sources always need"):
        fetch_model("s3://models/tabular/1", dest, require_manifest=False)


def flip_graph_constant(pb: Path) -> None:
    """Flip one bit of saved_model.pb: the graph's ``+ 1.0`` becomes ``+ 1.5``; the file still parses and loads."""
    import struct

    data = bytearray(pb.read_bytes())
    data[data.index(struct.pack("<d", 1.0)) + 6] ^= 0x08
    pb.write_bytes(bytes(data))


def test_a_flipped_byte_in_saved_model_pb_is_refused(model: Path, tmp_path: Path) -> None:
    # The defect: such a file passes every structural check and serves wrong answers ...
    flip_graph_constant(model / "saved_model.pb")
    assert predict(model) == [3.5, 82.5]  # instead of [3.0, 82.0]
    shutil.copy(model / "manifest.json", tmp_path / "manifest.json")
    (model / "manifest.json").unlink()
    verify_savedmodel(model)
    # ... only the manifest tells: the fetch refuses it and leaves no version folder.
    shutil.copy(tmp_path / "manifest.json", model / "manifest.json")
    assert_refused(model, tmp_path / "dest", IntegrityError, "saved_model.pb does not match manifest.json",
                   "sha256 differs")


@pytest.mark.parametrize(
    ("uri", "version", "expected"),
    [
        ("s3://models/tabular/3", None, 3),
        ("s3://models/tabular/3/", None, 3),
        ("s3://models/tabular/3", 3, 3),
        ("s3://models/tabular/latest", 5, 5),
        ("/mnt/models/12", None, 12),
        ("file:///mnt/models/0", None, 0),
    ],
)
def test_version_comes_from_the_uri_or_the_argument(uri: str, version: int | None, expected: int) -> None:
    assert model_version(uri, version) == expected


@pytest.mark.parametrize(
    ("uri", "version", "message"),
    [
        ("s3://models/tabular/latest", None, "is not an integer and --version is not set"),
        ("s3://models/tabular/3", 4, "ends in version 3 but version 4 was given"),
        ("s3://models/tabular", -1, "non-negative integer"),
    ],
)
def test_bad_versions_are_refused(uri: str, version: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model_version(uri, version)


def assert_refused(source: Path, dest: Path, error: type[Exception], *patterns: str) -> str:
    with pytest.raises(error) as caught:
        fetch_model(str(source), dest)
    for pattern in patterns:
        assert pattern in str(caught.value), str(caught.value)
    assert not (dest / source.name).exists()
    assert not [name for name in leftovers(dest) if name.startswith(".tmp-")]
    return str(caught.value)


def test_missing_variables_index_fails_and_creates_no_version_folder(model: Path, tmp_path: Path) -> None:
    (model / "variables" / "variables.index").unlink()
    assert_refused(model, tmp_path / "dest", ModelError, "variables/variables.index is missing")


def test_missing_variables_folder_is_caught_after_download_and_cleaned_up(model: Path, tmp_path: Path) -> None:
    # The listing looks fine (nothing under variables/), only saved_model.pb says a checkpoint is needed.
    shutil.rmtree(model / "variables")
    write_manifest(model)  # a manifest that agrees: only the graph can tell
    dest = tmp_path / "dest"
    assert_refused(model, dest, ModelError, "variables/variables.index is missing")
    assert dest.is_dir()  # the download did start: the staging folder was created and removed


def test_base_folder_instead_of_version_folder_is_refused_with_a_hint(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(ModelError, match=r"no saved_model\.pb at its top") as caught:
        fetch_model(str(model.parent), dest, version=1)
    assert f"point the URI at {model.parent}/7/" in str(caught.value)
    assert not dest.exists()


def test_truncated_saved_model_pb_is_refused(model: Path, tmp_path: Path) -> None:
    pb = model / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:-100])
    write_manifest(model)  # without this the manifest already refuses it (test_manifest_is_verified_file_by_file)
    assert_refused(model, tmp_path / "dest", ModelError, "truncated or corrupt")


def test_signature_file_must_match_the_graph(model: Path, tmp_path: Path) -> None:
    path = model / "assets.extra" / "kfp_tabular_signature.json"
    data = json.loads(path.read_text())
    data["inputs"][1]["name"] = "sex"
    path.write_text(json.dumps(data))
    write_manifest(model)
    assert_refused(model, tmp_path / "dest", ModelError, "describe different models", "'sex'")


def test_manifest_is_verified_file_by_file(model: Path, tmp_path: Path) -> None:
    write_manifest(model)
    assert verify_savedmodel(model).manifest
    assert fetch_model(str(model), tmp_path / "ok").joinpath("manifest.json").is_file()

    data = model / "variables" / "variables.data-00000-of-00001"
    original = data.read_bytes()
    data.write_bytes(bytes([original[0] ^ 1]) + original[1:])  # one flipped bit, same size
    assert_refused(model, tmp_path / "flipped", ModelError, "variables.data-00000-of-00001", "sha256 differs")
    data.write_bytes(original)

    (model / "assets.extra" / "extra.txt").write_text("not exported")
    assert_refused(model, tmp_path / "extra", ModelError, "not in the manifest ['assets.extra/extra.txt']")
    (model / "assets.extra" / "extra.txt").unlink()

    (model / "fingerprint.pb").unlink()
    assert_refused(model, tmp_path / "missing", ModelError, "missing ['fingerprint.pb']")


def test_refetch_of_the_same_model_changes_nothing(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    path = fetch_model(str(model), dest)
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.rglob("*")}
    assert fetch_model(str(model), dest) == path
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.rglob("*")} == before
    assert leftovers(dest) == ["7"]


def test_a_different_model_under_an_existing_version_is_refused(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    path = fetch_model(str(model), dest)
    signature = model / "assets.extra" / "kfp_tabular_signature.json"
    signature.write_text(signature.read_text().replace('"tiny"', '"tinz"'))  # same size, other bytes
    write_manifest(model)
    with pytest.raises(ModelError, match="already holds a different model") as caught:
        fetch_model(str(model), dest)
    assert "different content: assets.extra/kfp_tabular_signature.json" in str(caught.value)
    assert '"tiny"' in (path / "assets.extra" / "kfp_tabular_signature.json").read_text()
    assert leftovers(dest) == ["7"]


def _die_while_staging(dest: str) -> None:
    staging = fetch.Staging.create(Path(dest), 7)
    (staging.folder / "saved_model.pb").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)  # what the kubelet does after the grace period: no clean-up runs


def test_staging_left_by_a_killed_fetch_is_removed(model: Path, tmp_path: Path) -> None:
    import multiprocessing

    dest = tmp_path / "dest"
    dest.mkdir()
    child = multiprocessing.get_context("fork").Process(target=_die_while_staging, args=(str(dest),))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert len([name for name in leftovers(dest) if name.startswith(".tmp-7-")]) == 2  # folder + owner file
    fetch_model(str(model), dest)
    assert leftovers(dest) == ["7"]


def test_the_live_staging_of_another_fetch_is_never_removed(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    other = fetch.Staging.create(dest, 7)  # another fetch of version 7, still downloading
    try:
        (other.folder / "saved_model.pb").write_bytes(b"in progress")
        assert fetch_model(str(model), dest) == dest / "7"
        assert (other.folder / "saved_model.pb").read_bytes() == b"in progress"
    finally:
        other.close()
    assert leftovers(dest) == ["7"]


def test_orphan_staging_without_owner_is_removed_only_when_old(model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    old, young = dest / ".tmp-7-oldversion", dest / ".tmp-7-justnow"
    for folder in (old, young):
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"half")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    fetch_model(str(model), dest)
    assert leftovers(dest) == [".tmp-7-justnow", "7"]


def test_missing_source_folder(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        fetch_model(str(tmp_path / "nope" / "1"), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_unwritable_dest_and_unknown_scheme(model: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot write into --dest"):
        fetch_model(str(model), blocked / "tabular")
    with pytest.raises(DataSourceError, match="unknown scheme 'gs://'"):
        fetch_model("gs://models/tabular/1", tmp_path / "dest")


def test_outline_read_without_tensorflow_matches_the_real_proto(tiny_savedmodel: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    data = (tiny_savedmodel / "saved_model.pb").read_bytes()
    proto = saved_model_pb2.SavedModel.FromString(data)
    (outline,) = saved_model_outline(data)
    (graph,) = proto.meta_graphs
    assert outline.tags == set(graph.meta_info_def.tags) == {"serve"}
    assert outline.has_variables == graph.HasField("object_graph_def")
    assert set(outline.signatures) == set(graph.signature_def)
    for name, signature in graph.signature_def.items():
        assert outline.signatures[name].inputs == set(signature.inputs)
        assert outline.signatures[name].outputs == set(signature.outputs)


def test_cli_timeouts_come_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp_tabular.cli import build_parser, fetch_timeouts
    from kfp_tabular.components._shared.s3 import S3Timeouts

    parse = build_parser().parse_args
    assert fetch_timeouts(parse(["fetch-model", "--source-uri", "x/1", "--dest", "d"])) == S3Timeouts()
    assert S3Timeouts() == S3Timeouts(connect_s=5.0, read_s=30.0, retries=2)
    monkeypatch.setenv("S3_READ_TIMEOUT_S", "7")
    monkeypatch.setenv("S3_RETRIES", "0")
    args = parse(["fetch-model", "--source-uri", "x/1", "--dest", "d", "--connect-timeout", "2"])
    assert fetch_timeouts(args) == S3Timeouts(connect_s=2.0, read_s=7.0, retries=0)
    args = parse(["fetch-model", "--source-uri", "x/1", "--dest", "d", "--read-timeout", "3", "--retries", "1"])
    assert fetch_timeouts(args) == S3Timeouts(connect_s=5.0, read_s=3.0, retries=1)
    monkeypatch.setenv("S3_RETRIES", "many")
    with pytest.raises(ConfigError, match="S3_RETRIES"):
        S3Timeouts.from_env()
    with pytest.raises(ConfigError, match="read timeout"):
        S3Timeouts(read_s=0)


def test_cli_exit_codes_and_messages(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "dest"
    assert main(["fetch-model", "--source-uri", str(model), "--dest", str(dest), "--version", "7"]) == 0
    assert "Model version 7 is ready" in capsys.readouterr().out
    (model / "variables" / "variables.index").unlink()
    assert main(["fetch-model", "--source-uri", str(model), "--dest", str(tmp_path / "bad")]) == 2
    assert "kfp-tabular: error:" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "7").exists()


def test_fetch_model_imports_no_heavy_library() -> None:
    code = (
        "import sys, kfp_tabular.cli, kfp_tabular.serving.fetch\n"
        "heavy = {'tensorflow', 'pandas', 'autogluon', 'shap', 'kfp'} & {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]"
