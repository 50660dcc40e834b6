"""The KFP API TEST DOUBLE answers the unchanged ``kfp.Client`` as the real API server would."""

from __future__ import annotations

import json
import time

import kfp
import kfp_server_api
import pytest
from submit_env import PROFILE, TOKEN


def _client(api, **kwargs) -> kfp.Client:
    return kfp.Client(host=api.url, **kwargs)


def _error(exc_info) -> tuple[int, dict]:
    return exc_info.value.status, json.loads(exc_info.value.body)


def test_a_run_from_a_package_goes_pending_running_succeeded(api, tiny_package):
    client = _client(api)
    assert client.get_kfp_healthz().multi_user is False
    result = client.create_run_from_pipeline_package(str(tiny_package), arguments={"n": 3, "flag": True},
                                                     experiment_name="exp")
    assert client.get_run(result.run_id).state == "PENDING"
    time.sleep(api.pending_s + 0.05)
    assert client.get_run(result.run_id).state == "RUNNING"
    done = client.wait_for_run_completion(result.run_id, timeout=10, sleep_duration=0.1)
    assert done.state == "SUCCEEDED"
    assert [s.state for s in done.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert done.runtime_config.parameters == {"n": 3, "flag": True}
    # The experiment is found by name, not created again, on the next submission.
    client.create_run_from_pipeline_package(str(tiny_package), arguments={"n": 1}, experiment_name="exp")
    assert [e["display_name"] for e in api.experiments.values()] == ["exp"]


def test_a_failed_run_says_so_with_its_error(api, tiny_package):
    api.outcome = "FAILED"
    result = _client(api).create_run_from_pipeline_package(str(tiny_package), arguments={"n": 1})
    done = _client(api).wait_for_run_completion(result.run_id, timeout=10, sleep_duration=0.1)
    assert done.state == "FAILED"
    assert "train-autogluon failed" in done.error.message


def test_upload_then_run_a_pipeline_version(api, tiny_package):
    client = _client(api)
    pipeline = client.upload_pipeline(str(tiny_package), pipeline_name="tiny-pipeline")
    assert client.get_pipeline_id("tiny-pipeline") == pipeline.pipeline_id
    version = client.upload_pipeline_version(str(tiny_package), "v2", pipeline_id=pipeline.pipeline_id)
    assert client.get_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id).display_name == "v2"
    experiment = client.create_experiment("from-versions")
    run = client.run_pipeline(experiment.experiment_id, "r", pipeline_id=pipeline.pipeline_id,
                              version_id=version.pipeline_version_id, params={"n": 2})
    assert run.state == "PENDING"
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.run_pipeline(experiment.experiment_id, "r", pipeline_id=pipeline.pipeline_id,
                            version_id=version.pipeline_version_id, params={"n": "2"})
    assert raised.value.status == 400
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.upload_pipeline(str(tiny_package), pipeline_name="tiny-pipeline")
    assert _error(raised)[0] == 409


def test_an_upload_that_is_not_a_pipeline_spec_is_400(api, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelineInfo: {name: x}\nroot: {}\nschemaVersion: 2.1.0\nsurprise: 1\n")
    with pytest.raises(kfp_server_api.ApiException) as raised:
        _client(api)._upload_api.upload_pipeline(str(bad), name="bad")
    status, body = _error(raised)
    assert (status, body["code"]) == (400, 3)
    assert "invalid v2 pipeline spec" in body["message"] and "surprise" in body["message"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"n": 1, "nope": 2}, "parameter(s) provided are not required by pipeline: nope"),
    ({"n": "three"}, "input parameter n requires type double or integer"),
    ({"n": True}, "input parameter n requires type double or integer"),
    ({"n": 1, "flag": "yes"}, "input parameter flag requires type bool"),
    ({"n": 1, "text": 5}, "input parameter text requires type string"),
    ({"ratio": 0.1}, "parameter n is not optional, yet has neither default value nor user provided value"),
])
def test_run_parameters_are_checked_against_the_root_inputs(api, tiny_package, arguments, message):
    with pytest.raises(kfp_server_api.ApiException) as raised:
        _client(api).create_run_from_pipeline_package(str(tiny_package), arguments=arguments)
    status, body = _error(raised)
    assert (status, body["code"]) == (400, 3)
    assert body["error"] == body["message"]
    assert body["message"].startswith(f"Failed to create a run: invalid pipeline job inputs: {message}")
    assert not api.runs


def test_multi_user_needs_credentials(profile_api, tiny_package):
    assert _client(profile_api).get_kfp_healthz().multi_user is True  # healthz needs none
    with pytest.raises(kfp_server_api.ApiException) as raised:
        _client(profile_api).create_run_from_pipeline_package(str(tiny_package), {"n": 1}, namespace=PROFILE)
    status, body = _error(raised)
    assert (status, body["code"]) == (401, 16)
    assert body["message"] == "Request header error: there is no user identity header."
    with pytest.raises(kfp_server_api.ApiException) as raised:
        _client(profile_api, existing_token="stolen").list_experiments(namespace=PROFILE)
    assert _error(raised)[0] == 401
    assert "token review" in _error(raised)[1]["message"]


def test_multi_user_namespace_without_profile_is_403(profile_api, tiny_package):
    client = _client(profile_api, existing_token=TOKEN)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.create_run_from_pipeline_package(str(tiny_package), {"n": 1}, namespace="kubeflow-user-typo")
    status, body = _error(raised)
    assert (status, body["code"]) == (403, 7)
    assert "PermissionDenied" in body["message"] and "Namespace:kubeflow-user-typo" in body["message"]


@pytest.mark.parametrize("credentials", [{"existing_token": TOKEN}, {"cookies": "authservice_session=s3cr3t"}])
def test_multi_user_run_with_a_token_or_the_login_cookie(profile_api, tiny_package, credentials):
    client = _client(profile_api, **credentials)
    result = client.create_run_from_pipeline_package(str(tiny_package), {"n": 1}, namespace=PROFILE)
    assert client.get_run(result.run_id).state in ("PENDING", "RUNNING")
    assert [e["namespace"] for e in profile_api.experiments.values()] == [PROFILE]
