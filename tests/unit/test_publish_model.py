"""publish_model into a local-folder model repository: layout, manifest last, idempotency, conflicts, interruption.

Real TensorFlow SavedModels, real processes for the concurrency tests; the S3 side is in tests/s3/.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from savedmodels import variant

from kfp_tabular.components.publish_model.core import PublishConfig, build_lineage, publish
from kfp_tabular.errors import ConfigError, IntegrityError, ModelError, VersionConflictError
from kfp_tabular.serving.fetch import fetch_model
from kfp_tabular.serving.repository import (
    list_versions,
    publish_savedmodel,
    resolve_version,
    version_manifest,
)
from kfp_tabular.serving.verify import (
    MANIFEST_FILE,
    build_manifest,
    list_files,
    verify_savedmodel,
)


@pytest.fixture
def model(tiny_savedmodel: Path, tmp_path: Path) -> Path:
    return variant(tiny_savedmodel, tmp_path / "export" / "savedmodel")


@pytest.fixture
def other(tiny_savedmodel: Path, tmp_path: Path) -> Path:
    return variant(tiny_savedmodel, tmp_path / "other" / "savedmodel", tag="other")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_publish_writes_every_file_then_a_manifest_with_lineage(model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo" / "tabular"
    lineage = {"training_data_sha256": "ab" * 32, "tensorflow_version": "2.21.0"}
    result = publish_savedmodel(model, str(repo), lineage=lineage)

    assert (result.version, result.status, result.uri) == (1, "published", f"{repo}/1")
    assert sorted(p.name for p in repo.iterdir()) == [".claims", "1"]  # TF Serving only looks at integers
    assert list_files(repo / "1").keys() == list_files(model).keys()
    manifest = json.loads((repo / "1" / MANIFEST_FILE).read_text())
    assert manifest["root_digest"] == build_manifest(model)["root_digest"] == result.root_digest
    assert manifest["files"] == build_manifest(model)["files"]
    assert manifest["lineage"]["training_data_sha256"] == "ab" * 32
    assert verify_savedmodel(repo / "1", require_manifest=True).manifest
    assert result.uploaded_files == len(list_files(model))  # the repository manifest replaces the export's
    assert result.commit_mechanism.startswith("os.link")
    assert list_versions(str(repo)) == [1]
    assert resolve_version(str(repo)) == resolve_version(str(repo), 1) == 1
    assert version_manifest(str(repo), 1)["root_digest"] == result.root_digest


def test_republishing_the_same_model_writes_nothing_and_returns_its_version(model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish_savedmodel(model, str(repo), lineage={"run": "first"})
    before = snapshot(repo)
    # Lineage is not model content: a later run with other lineage is still the same model.
    again = publish_savedmodel(model, str(repo), lineage={"run": "second"})
    explicit = publish_savedmodel(model, repo.as_uri(), version=1)
    assert (again.version, again.status, again.uploaded_files, again.uploaded_bytes) == (1, "unchanged", 0, 0)
    assert (explicit.version, explicit.status) == (1, "unchanged")
    assert snapshot(repo) == before
    assert json.loads((repo / "1" / MANIFEST_FILE).read_text())["lineage"] == {"run": "first"}


def test_a_different_model_gets_the_next_version_or_a_conflict(model: Path, other: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = publish_savedmodel(model, str(repo))
    before = snapshot(repo / "1")
    second = publish_savedmodel(other, str(repo))
    assert second.version == 2 and second.root_digest != first.root_digest
    with pytest.raises(VersionConflictError) as caught:
        publish_savedmodel(other, str(repo), version=1)
    message = str(caught.value)
    assert f"{repo}/1" in message and first.root_digest[:12] in message and second.root_digest[:12] in message
    assert "new version" in message  # how to fix
    assert snapshot(repo / "1") == before
    assert list_versions(str(repo)) == [1, 2]


def test_an_interrupted_publish_leaves_no_manifest_and_is_never_fetched(model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    uploaded: list[str] = []

    def interrupt(relpath: str) -> None:
        uploaded.append(relpath)
        if len(uploaded) == 2:
            raise KeyboardInterrupt  # what a SIGINT / SIGTERM does to the step midway

    with pytest.raises(KeyboardInterrupt):
        publish_savedmodel(model, str(repo), on_file_uploaded=interrupt)
    assert (repo / "1").is_dir() and not (repo / "1" / MANIFEST_FILE).exists()
    assert list_versions(str(repo)) == []
    with pytest.raises(ModelError, match="no complete version"):
        resolve_version(str(repo))
    with pytest.raises(ModelError, match=r"no manifest\.json"):
        resolve_version(str(repo), 1)

    dest = tmp_path / "serving"
    with pytest.raises(IntegrityError, match=r"no manifest\.json") as caught:
        fetch_model(str(repo / "1"), dest)
    assert "publish" in str(caught.value)  # says what to do
    assert not dest.exists()  # refused from the listing, before anything was written

    resumed = publish_savedmodel(model, str(repo))  # the same model finishes the version it claimed
    assert (resumed.version, resumed.status) == (1, "resumed")
    assert fetch_model(str(repo / "1"), dest) == dest / "1"


def test_an_unfinished_publish_of_another_model_is_never_overwritten(model: Path, other: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"

    def stop(relpath: str) -> None:
        raise RuntimeError("upload failed")

    with pytest.raises(RuntimeError):
        publish_savedmodel(model, str(repo), on_file_uploaded=stop)
    assert publish_savedmodel(other, str(repo)).version == 2  # the next free number, not the claimed 1
    with pytest.raises(VersionConflictError, match="unfinished publish"):
        publish_savedmodel(other, str(repo), version=1)


def test_a_version_folder_with_foreign_files_is_refused(model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "3").mkdir(parents=True)
    (repo / "3" / "notes.txt").write_text("uploaded by hand")
    with pytest.raises(VersionConflictError, match=r"notes\.txt"):
        publish_savedmodel(model, str(repo), version=3)
    assert not (repo / "3" / MANIFEST_FILE).exists()
    assert publish_savedmodel(model, str(repo)).version == 4  # auto skips a number that has files


def _publish_worker(model: str, repos: list[str], version: int | None, start, results) -> None:
    """One publisher process: for each trial, wait for the others, then publish into the trial's repository."""
    for repo in repos:
        start.wait()
        try:
            result = publish_savedmodel(Path(model), repo, version=version)
            results.put((repo, "ok", model, result.version))
        except VersionConflictError:
            results.put((repo, "conflict", model, version))
        except Exception as error:  # surfaced by the assertions
            results.put((repo, "error", model, f"{type(error).__name__}: {error}"))


def _race(models: list[Path], repos: list[Path], version: int | None) -> dict[str, list[tuple]]:
    """Real concurrent processes (spawned: independent interpreters), one per model, racing once per repository."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(models)), context.Queue()
    workers = [context.Process(target=_publish_worker, args=(str(m), [str(r) for r in repos], version, start,
                                                             results)) for m in models]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(len(models) * len(repos))]
    for worker in workers:
        worker.join(30)
    by_repo: dict[str, list[tuple]] = {str(r): [] for r in repos}
    for repo, *outcome in outcomes:
        by_repo[repo].append(tuple(outcome))
    return by_repo


def test_concurrent_publishers_of_one_version_exactly_one_wins(tiny_savedmodel: Path, tmp_path: Path) -> None:
    models = [variant(tiny_savedmodel, tmp_path / f"m{i}", tag=str(i)) for i in range(4)]
    races = _race(models, [tmp_path / f"repo{trial}" for trial in range(5)], version=1)
    for repo, outcomes in races.items():
        assert not [o for o in outcomes if o[0] == "error"], outcomes
        winners = [o for o in outcomes if o[0] == "ok"]
        assert len(winners) == 1, outcomes
        # The version holds exactly the winner's files: the losers never wrote into it.
        assert version_manifest(repo, 1)["root_digest"] == build_manifest(Path(winners[0][1]))["root_digest"]
        verify_savedmodel(Path(repo) / "1", require_manifest=True)


def test_concurrent_publishers_without_a_version_get_distinct_ones(tiny_savedmodel: Path, tmp_path: Path) -> None:
    models = [variant(tiny_savedmodel, tmp_path / f"m{i}", tag=str(i)) for i in range(4)]
    repo = tmp_path / "repo"
    outcomes = _race(models, [repo], version=None)[str(repo)]
    assert sorted(o[0] for o in outcomes) == ["ok"] * 4, outcomes
    assert sorted(o[2] for o in outcomes) == [1, 2, 3, 4]
    for _, folder, version in outcomes:
        assert version_manifest(str(repo), version)["root_digest"] == build_manifest(Path(folder))["root_digest"]


def test_a_flipped_byte_in_a_published_saved_model_pb_is_refused(model: Path, tmp_path: Path) -> None:
    import struct

    repo = tmp_path / "repo"
    publish_savedmodel(model, str(repo))
    pb = repo / "1" / "saved_model.pb"
    data = bytearray(pb.read_bytes())
    data[data.index(struct.pack("<d", 1.0)) + 6] ^= 0x08  # the graph's "+ 1.0" becomes "+ 1.5": still loads
    pb.write_bytes(bytes(data))
    dest = tmp_path / "serving"
    with pytest.raises(IntegrityError, match=r"saved_model\.pb does not match manifest\.json"):
        fetch_model(str(repo / "1"), dest)
    assert not (dest / "1").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repository_uri": ""}, "repository_uri"),
        ({"repository_uri": "gs://bucket/models"}, "unknown scheme"),
        ({"repository_uri": "s3://"}, "names no bucket"),
        ({"repository_uri": "/models", "version": 0}, "positive integer"),
        ({"repository_uri": "/models", "version": True}, "positive integer"),
    ],
)
def test_publish_config_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PublishConfig(**kwargs)


def test_lineage_comes_from_the_upstream_artifacts() -> None:
    lineage = build_lineage(
        savedmodel_metadata={"tensorflow_version": "2.21.0", "parity_max_abs_diff": 1e-8, "parity_rows_checked": 70,
                             "model_name": "WeightedEnsemble_L2"},
        train_data_metadata={"sha256": "cd" * 32, "rows": 240},
        model_metadata={"autogluon_version": "1.6.3"},
        component_image="registry.example.com/kfp-tabular@sha256:" + "0" * 64,
    )
    assert lineage["training_data_sha256"] == "cd" * 32
    assert lineage["autogluon_version"] == "1.6.3"
    assert lineage["tensorflow_version"] == "2.21.0"
    assert lineage["parity"] == {"max_abs_diff": 1e-8, "rows_checked": 70}
    assert lineage["component_image"].endswith("0" * 64)
    assert lineage["kfp_tabular_version"]
    assert build_lineage({})["training_data_sha256"] is None  # unknown stays visible, never invented


def test_core_publish_returns_metadata_and_writes_the_report(model: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    report, pointer = tmp_path / "out" / "report.md", tmp_path / "out" / "published_model"
    result = publish(model, PublishConfig(str(repo)), build_lineage({"tensorflow_version": "2.21.0"}),
                     report, pointer)
    assert result.metadata["version"] == 1
    assert result.metadata["uri"] == f"{repo}/1"
    assert result.metadata["root_digest"] == build_manifest(model)["root_digest"]
    assert result.metadata["commit_mechanism"].startswith("os.link")
    text = report.read_text()
    assert "version 1" in text and result.metadata["root_digest"] in text and "2.21.0" in text
    assert json.loads(pointer.read_text())["uri"] == f"{repo}/1"

    changed = variant(model, tmp_path / "changed", tag="x")
    with pytest.raises(VersionConflictError):
        publish(changed, PublishConfig(str(repo), version=1), {}, tmp_path / "bad.md", tmp_path / "bad.json")
    assert not (tmp_path / "bad.md").exists() and not (tmp_path / "bad.json").exists()


def test_component_interface_compiles(tmp_path: Path) -> None:
    import yaml
    from kfp import compiler

    from kfp_tabular.components.publish_model.component import publish_model

    compiler.Compiler().compile(publish_model, str(tmp_path / "c.yaml"))
    spec = yaml.safe_load((tmp_path / "c.yaml").read_text())
    inputs = spec["root"]["inputDefinitions"]
    assert set(inputs["artifacts"]) == {"savedmodel", "train_data", "model"}
    assert inputs["artifacts"]["train_data"].get("isOptional") and inputs["artifacts"]["model"].get("isOptional")
    assert inputs["parameters"]["version"]["defaultValue"] == 0
    assert set(spec["root"]["outputDefinitions"]["artifacts"]) == {"published_model", "report"}


def test_cli_publish_then_fetch(model: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("kfp-tabular")
    repo = tmp_path / "repo"
    done = subprocess.run([str(script), "publish", "--savedmodel", str(model), "--repository-uri", str(repo)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Published version 1 at {repo}/1" in done.stdout
    again = subprocess.run([str(script), "publish", "--savedmodel", str(model), "--repository-uri", str(repo),
                            "--version", "1"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already holds this model" in again.stdout
    fetched = subprocess.run([str(script), "fetch-model", "--source-uri", f"{repo}/1", "--dest",
                              str(tmp_path / "serving")], capture_output=True, text=True, timeout=120)
    assert fetched.returncode == 0, fetched.stderr


def test_the_export_writes_a_manifest_that_publish_and_fetch_accept(penguins_csv: Path, tmp_path: Path) -> None:
    from core_chain import export_model, ingest_table, train_model

    chain = export_model(train_model(ingest_table(penguins_csv, tmp_path / "chain", label="species"), "species",
                                     models={"LR": {}}))
    savedmodel = chain.savedmodel
    assert (savedmodel / MANIFEST_FILE).is_file()
    assert verify_savedmodel(savedmodel, require_manifest=True).manifest
    published = publish_savedmodel(savedmodel, str(tmp_path / "repo"))
    assert published.root_digest == json.loads((savedmodel / MANIFEST_FILE).read_text())["root_digest"]
    assert fetch_model(published.uri, tmp_path / "serving").name == "1"


def test_the_kfp_shell_runs_through_kfp_local(model: Path, tmp_path: Path) -> None:
    from kfp import dsl, local
    from kfp.dsl import Dataset, Model

    from kfp_tabular.components.publish_model.component import publish_model

    train = tmp_path / "train.parquet"
    train.write_bytes(b"stand-in: only its metadata is read")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))

    repo = tmp_path / "repo"

    @dsl.pipeline  # no parameters: this module's postponed annotations would be strings KFP cannot read
    def publish_twice():
        repository_uri = str(repo)
        savedmodel = dsl.importer(artifact_uri=str(model), artifact_class=Model,
                                  metadata={"tensorflow_version": "2.21.0", "parity_max_abs_diff": 0.0})
        data = dsl.importer(artifact_uri=str(train), artifact_class=Dataset, metadata={"sha256": "ef" * 32})
        first = publish_model(savedmodel=savedmodel.output, repository_uri=repository_uri, train_data=data.output)
        publish_model(savedmodel=savedmodel.output, repository_uri=repository_uri, version=1).after(first)

    publish_twice()
    assert list_versions(str(repo)) == [1]
    lineage = version_manifest(str(repo), 1)["lineage"]
    assert lineage["training_data_sha256"] == "ef" * 32 and lineage["tensorflow_version"] == "2.21.0"
    pointers = sorted((tmp_path / "root").rglob("published_model"))
    assert [json.loads(p.read_text())["uri"] for p in pointers] == [f"{repo}/1"] * 2
