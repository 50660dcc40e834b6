"""``kfp-tabular submit`` against the KFP API TEST DOUBLE, through the real ``kfp.Client``."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from pathlib import Path

import kfp
import kfp_server_api
import pytest
from submit_env import PROFILE

from kfp_tabular import submit
from kfp_tabular.cli import main


def _submit(tmp_path: Path, *argv: str) -> int:
    return main(["submit", "--output", str(tmp_path / "tabular_training.yaml"), *argv])


def _only_run(api):
    (run,) = api.runs.values()
    return run.body


def test_submit_prints_the_run_url_and_types_parameters_as_the_pipeline_declares(api, tmp_path, capsys):
    code = _submit(tmp_path, "--host", api.url, "--param", "time_limit_s=30", "--param", "label=123",
                   "--param", "refit_ensemble=true", "--run-name", "first")
    out, err = capsys.readouterr()
    assert code == 0, err
    run = _only_run(api)
    assert f"{api.url}/#/runs/details/{run['run_id']}" in out
    assert run["display_name"] == "first"
    # label is a string parameter: "123" stays a string; the integer and the bool are typed.
    assert run["runtime_config"]["parameters"] == {"time_limit_s": 30, "label": "123", "refit_ensemble": True}
    assert "Experiment details" not in out  # kfp.Client's own prints are replaced by one line


def test_wait_follows_the_run_on_plain_lines_and_exits_0(api, tmp_path, capsys):
    code = _submit(tmp_path, "--host", api.url, "--wait", "--poll-seconds", "0.1")
    out, err = capsys.readouterr()
    assert code == 0, err
    states = [line.split()[2] for line in out.splitlines() if line.startswith("  run ")]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert "\x1b" not in out and "\r" not in out
    assert "succeeded" in out.splitlines()[-1]


def test_wait_on_a_failed_run_exits_1_with_its_error_and_url(api, tmp_path, capsys):
    api.outcome = "FAILED"
    code = _submit(tmp_path, "--host", api.url, "--wait", "--poll-seconds", "0.1")
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED" in err and "train-autogluon failed" in err
    assert f"/#/runs/details/{_only_run(api)['run_id']}" in err


def test_progress_is_one_updating_line_on_a_terminal(api, tiny_package):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    run = submit.submit_run(tiny_package, {"n": 1}, host=api.url, out=io.StringIO())
    terminal = Terminal()
    final = submit.wait_for_run(run, poll_s=0.1, out=terminal)
    assert final.state == "SUCCEEDED"
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r\x1b[K") >= 3 and "RUNNING" in text


def test_unreachable_host_says_which_and_what_to_check_without_traceback(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    done = subprocess.run([sys.executable, "-m", "kfp_tabular.cli", "submit", "--host", host, "--output",
                           str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert host in done.stderr and "connection refused" in done.stderr and "port-forward" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_unknown_parameter_is_refused_before_any_request_naming_the_parameters(api, tmp_path, capsys):
    code = _submit(tmp_path, "--host", api.url, "--param", "time_limit=30")
    err = capsys.readouterr().err
    assert code == 2
    assert "time_limit (did you mean time_limit_s?)" in err and "time_limit_s (integer)" in err and "source_uri (string)" in err
    assert "before contacting the KFP API" in err
    assert api.requests == []


@pytest.mark.parametrize(("param", "expected"), [
    ("time_limit_s=abc", "time_limit_s takes an integer"),
    ("time_limit_s=1.5", "time_limit_s takes an integer"),
    ("deploy=yes", "deploy takes true or false"),
])
def test_wrong_type_is_refused_before_any_request(api, tmp_path, capsys, param, expected):
    code = _submit(tmp_path, "--host", api.url, "--param", param)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and "before contacting the KFP API" in err
    assert api.requests == []


def test_notebook_arguments_are_checked_too(api, tiny_package):
    with pytest.raises(submit.SubmitError, match="n takes an integer"):
        submit.submit_run(tiny_package, {"n": "3"}, host=api.url)
    with pytest.raises(submit.SubmitError, match="n is required"):
        submit.submit_run(tiny_package, {}, host=api.url)
    assert api.requests == []


def test_wrong_namespace_says_the_profile_is_unknown_or_not_yours(profile_api, tmp_path, capsys, token_file):
    code = _submit(tmp_path, "--host", profile_api.url, "--namespace", "kubeflow-user-typo", "--token-file",
                   str(token_file))
    err = capsys.readouterr().err
    assert code == 2
    assert "kubeflow-user-typo" in err and "profile" in err and "403" in err
    assert "Traceback" not in err


def test_multi_user_without_namespace_asks_for_one(profile_api, tmp_path, capsys, token_file):
    code = _submit(tmp_path, "--host", profile_api.url, "--token-file", str(token_file))
    assert code == 2
    assert "--namespace" in capsys.readouterr().err


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_auth_failure_says_how_to_give_credentials(profile_api, tmp_path, capsys, token):
    argv = ["--host", profile_api.url, "--namespace", PROFILE]
    if token:
        (tmp_path / "t").write_text(token)
        argv += ["--token-file", str(tmp_path / "t")]
    code = _submit(tmp_path, *argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "401" in err
    for hint in ("KF_PIPELINES_SA_TOKEN_PATH", "--token-file", "--cookies", "PodDefault"):
        assert hint in err, hint
    assert not profile_api.runs


def test_multi_user_with_the_poddefault_token_or_a_cookie(profile_api, tmp_path, capsys, token_file, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    assert _submit(tmp_path, "--host", profile_api.url, "--namespace", PROFILE) == 0
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH")
    assert _submit(tmp_path, "--host", profile_api.url, "--namespace", PROFILE, "--cookies",
                   "authservice_session=s3cr3t") == 0
    assert len(profile_api.runs) == 2
    assert "/#/runs/details/" in capsys.readouterr().out


def test_a_server_side_rejection_is_explained_with_the_servers_message(api, tiny_package):
    # The real client's exception for a run the server refuses (client-side checks bypassed).
    client = kfp.Client(host=api.url)
    with pytest.raises(kfp_server_api.ApiException) as raised:
        client.create_run_from_pipeline_package(str(tiny_package), {"n": 1, "nope": 1})
    message = submit.explain_api_error(raised.value, api.url, None, submit.Credentials())
    assert "rejected" in message and "400" in message
    assert "parameter(s) provided are not required by pipeline: nope" in message
    assert "\n" not in message


def test_no_endpoint_says_how_to_give_one(tmp_path, capsys, monkeypatch):
    for name in ("KFP_HOST", "KF_PIPELINES_ENDPOINT", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    assert _submit(tmp_path) == 2
    err = capsys.readouterr().err
    assert "No KFP endpoint" in err and "--host" in err and "port-forward" in err
