"""Submitting the compiled pipeline to Kubeflow Pipelines with ``kfp.Client``, and following the run.

Arguments are checked against the compiled pipeline's root inputs before any request, so a typo or a wrong type
fails at once and names the pipeline's parameters. Errors of the API (unreachable host, credentials, namespace,
a refused run) become one :class:`SubmitError` paragraph that says what to check.

Credentials, first found wins: a bearer token file (``--token-file`` / ``$KFP_TOKEN_FILE``, sent as
``kfp.Client(existing_token=...)``), login cookies (``--cookies`` / ``$KFP_COOKIES``, ``kfp.Client(cookies=...)``),
the ServiceAccount token that the ``access-ml-pipeline`` PodDefault projects into Kubeflow notebook servers
(``$KF_PIPELINES_SA_TOKEN_PATH``, else ``/var/run/secrets/kubeflow/pipelines/token``), then none.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from kfp_tabular.console import uses_colour
from kfp_tabular.errors import KfpTabularError
from kfp_tabular.text import clause

IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"  # kfp.client.KF_PIPELINES_SA_TOKEN_PATH
POD_NAMESPACE_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED"}
_KINDS = {"STRING": "string", "NUMBER_INTEGER": "integer", "NUMBER_DOUBLE": "number", "BOOLEAN": "bool",
          "LIST": "JSON list", "STRUCT": "JSON object"}
_CREDENTIAL_HELP = (
    "Give credentials: inside a Kubeflow notebook server, enable the PodDefault that mounts a ServiceAccount "
    "token for the ml-pipeline API (audience pipelines.kubeflow.org) and sets KF_PIPELINES_SA_TOKEN_PATH; "
    "outside, pass --token-file FILE (or $KFP_TOKEN_FILE) with a bearer token, e.g. from `kubectl create token "
    "default-editor -n <profile> --audience pipelines.kubeflow.org` (kfp.Client(existing_token=...)), or "
    "--cookies 'authservice_session=...' (or $KFP_COOKIES) copied from a browser logged in to the dashboard "
    "(kfp.Client(cookies=...))."
)


class SubmitError(KfpTabularError):
    """The run cannot be submitted or followed: bad arguments, unreachable API, credentials, namespace."""


@dataclass(frozen=True)
class Credentials:
    """How requests to the KFP API authenticate; all empty: no credentials (a port-forward, single-user)."""

    token: str | None = None
    cookies: str | None = None
    token_path: str | None = None  # a projected ServiceAccount token, re-read by kfp when it rotates

    @classmethod
    def find(cls, token_file: str | None = None, cookies: str | None = None) -> Credentials:
        """The flags, else ``$KFP_TOKEN_FILE`` / ``$KFP_COOKIES``, else the projected token, else none."""
        token_file = token_file or os.environ.get("KFP_TOKEN_FILE")
        if token_file:
            try:
                return cls(token=Path(token_file).read_text(encoding="utf-8").strip())
            except OSError as exc:
                raise SubmitError(f"Cannot read the token file {token_file}: {exc.strerror or exc}.") from None
        if cookies := cookies or os.environ.get("KFP_COOKIES"):
            return cls(cookies=cookies)
        path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH") or SA_TOKEN_PATH
        return cls(token_path=path) if Path(path).is_file() else cls()

    def describe(self) -> str:
        """What was sent, for error messages (never the secret itself)."""
        if self.token:
            return "a bearer token from --token-file"
        if self.cookies:
            return "the cookies given with --cookies"
        if self.token_path:
            return f"the ServiceAccount token in {self.token_path}"
        return "no credentials"

    def headers(self) -> dict[str, str]:
        """The HTTP headers these credentials add to a request."""
        token = self.token or (Path(self.token_path).read_text().strip() if self.token_path else None)
        return {"Authorization": f"Bearer {token}"} if token else {"Cookie": self.cookies} if self.cookies else {}


@dataclass(frozen=True)
class SubmittedRun:
    """A run created on the KFP API: its id, its page in the dashboard and the client that follows it."""

    client: Any  # kfp.Client
    run_id: str
    url: str
    experiment: str
    host: str
    namespace: str | None
    credentials: Credentials


def kfp_endpoint() -> str | None:
    """``$KFP_HOST`` / ``$KF_PIPELINES_ENDPOINT``; in a Kubeflow notebook server the in-cluster API; else None."""
    host = os.environ.get("KFP_HOST") or os.environ.get("KF_PIPELINES_ENDPOINT")
    if host:
        return host
    return IN_CLUSTER_HOST if Credentials.find().token_path and os.environ.get("KUBERNETES_SERVICE_HOST") else None


def pipeline_inputs(package: Path) -> dict[str, dict]:
    """The root ``inputDefinitions.parameters`` of a compiled pipeline YAML."""
    spec = next(yaml.safe_load_all(Path(package).read_text(encoding="utf-8")))
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def _problem(package: Path, inputs: dict[str, dict], problem: str) -> SubmitError:
    listing = ", ".join(f"{name} ({_KINDS.get(spec.get('parameterType'), spec.get('parameterType'))})"
                        for name, spec in sorted(inputs.items()))
    return SubmitError(f"{problem} (checked against the compiled pipeline {package} before contacting the KFP "
                       f"API). The pipeline's parameters: {listing or 'none'}.")


def parse_parameters(package: Path, items: dict[str, str]) -> dict[str, Any]:
    """``--param NAME=VALUE`` texts typed as the pipeline declares each parameter (``label=123`` stays text)."""
    inputs, typed = pipeline_inputs(package), {}
    for name, text in items.items():
        kind = inputs.get(name, {}).get("parameterType")
        try:
            typed[name] = _parse(kind, text) if name in inputs else text
        except ValueError:
            raise _problem(package, inputs, f"Parameter {name} takes {_expects(kind)}, got {text!r}") from None
    check_arguments(package, typed)
    return typed


def _expects(kind: str | None) -> str:
    return {"NUMBER_INTEGER": "an integer", "NUMBER_DOUBLE": "a number", "BOOLEAN": "true or false",
            "LIST": "a JSON list", "STRUCT": "a JSON object"}.get(kind or "", "a string")


def _parse(kind: str | None, text: str) -> Any:
    if kind == "NUMBER_INTEGER":
        return int(text)
    if kind == "NUMBER_DOUBLE":
        return float(text)
    if kind == "BOOLEAN":
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if kind in ("LIST", "STRUCT"):
        value = json.loads(text)
        if not isinstance(value, list if kind == "LIST" else dict):
            raise ValueError(text)
        return value
    return text


def _fits(kind: str | None, value: Any) -> bool:
    if isinstance(value, bool):
        return kind == "BOOLEAN"
    if kind == "NUMBER_INTEGER":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, {"NUMBER_DOUBLE": int | float, "LIST": list, "STRUCT": dict}.get(kind or "", str))


def check_arguments(package: Path, arguments: dict[str, Any]) -> None:
    """Refuse unknown, mistyped or missing arguments as the KFP API would, naming the pipeline's parameters."""
    inputs = pipeline_inputs(package)
    unknown = sorted(set(arguments) - set(inputs))
    if unknown:
        close = {m for name in unknown for m in difflib.get_close_matches(name, inputs, n=1)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        raise _problem(package, inputs, f"Unknown parameter(s) {', '.join(unknown)}{hint}")
    for name, value in arguments.items():
        kind = inputs[name].get("parameterType")
        if not _fits(kind, value):
            raise _problem(package, inputs, f"Parameter {name} takes {_expects(kind)}, got {value!r}")
    missing = [name for name, spec in inputs.items()
               if name not in arguments and not spec.get("isOptional") and "defaultValue" not in spec]
    if missing:
        raise _problem(package, inputs, f"Parameter(s) {', '.join(missing)} is required and has no default: "
                       f"pass {' '.join(f'--param {n}=VALUE' for n in missing)}")


def _server_message(exc: Any) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason or "").strip()


def explain_api_error(exc: Any, host: str, namespace: str | None, credentials: Credentials) -> str:
    """One paragraph for an ``ApiException`` of the KFP API: what it refused and what to check."""
    message, status = _server_message(exc), exc.status
    if status == 401:
        return (f"The KFP API at {host} did not accept the credentials (401 Unauthenticated: {message}); sent: "
                f"{credentials.describe()}. {_CREDENTIAL_HELP}")
    if status == 403:
        return (f"The KFP API at {host} refused access to namespace {namespace!r} (403 PermissionDenied: "
                f"{message}). Either no Kubeflow profile has that name, or {credentials.describe()} may not use "
                "it: check the profile name (`kubectl get profiles`, or the namespace chosen at the top of the "
                "dashboard) and that your account or ServiceAccount is a contributor to it.")
    if status == 400:
        return f"The KFP API at {host} rejected the run (400 InvalidArgument): {clause(message)}."
    if status == 404:
        return f"The KFP API at {host} found no such resource (404): {clause(message)}."
    return f"The KFP API at {host} answered {status} {exc.reason}: {clause(message)}."


def _unreachable(host: str, reason: object) -> SubmitError:
    text = str(reason)
    lower = text.lower()
    why = ("connection refused" if "refused" in lower else
           "the host name does not resolve" if "resolv" in lower or "name" in lower else text)
    return SubmitError(
        f"Cannot reach the KFP API at {host}: {why}. Check the host and port in --host / $KFP_HOST (the "
        "dashboard's address, or the ml-pipeline service without a path) and that the port-forward is running, "
        "e.g. `kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` then --host http://localhost:8080."
    )


@contextlib.contextmanager
def _api_errors(host: str, namespace: str | None, credentials: Credentials) -> Iterator[None]:
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        if exc.status == 0:
            raise _unreachable(host, exc.reason) from None
        raise SubmitError(explain_api_error(exc, host, namespace, credentials)) from None
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(host, getattr(exc, "reason", exc)) from None
    except ValueError as exc:  # kfp.Client's own checks, e.g. two experiments with the same name
        raise SubmitError(f"kfp.Client refused the request to {host}: {exc}") from None


def _healthz(host: str, credentials: Credentials) -> dict:
    """Probe the API once, with a short timeout (kfp.Client retries a failed healthz 5 times, 5 s apart)."""
    request = urllib.request.Request(f"{host}/apis/v2beta1/healthz", headers=credentials.headers())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # kfp.Client ignores $HTTP_PROXY too
    try:
        with opener.open(request, timeout=15) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SubmitError(f"The KFP API at {host} refused the request ({exc.code}); sent: "
                              f"{credentials.describe()}. {_CREDENTIAL_HELP}") from None
        raise SubmitError(f"{host}/apis/v2beta1/healthz answered HTTP {exc.code}: this is not a KFP API "
                          "endpoint; pass the dashboard's address or the ml-pipeline service, without a path.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(host, getattr(exc, "reason", exc)) from None
    try:
        return json.loads(body)
    except ValueError:
        raise SubmitError(f"{host} answered with a page that is not the KFP API (a login page?). "
                          f"{_CREDENTIAL_HELP}") from None


def _client(host: str, credentials: Credentials) -> Any:
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "This client only works with Kubeflow Pipeline v2.0.0-beta.2"
        return kfp.Client(
            host=host, existing_token=credentials.token, cookies=credentials.cookies,
            credentials=ServiceAccountTokenVolumeCredentials(credentials.token_path) if credentials.token_path
            else None)


def submit_run(
    package: Path,
    arguments: dict[str, Any],
    *,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str = "kfp-tabular",
    run_name: str | None = None,
    service_account: str | None = None,
    credentials: Credentials | None = None,
    out: TextIO | None = None,
) -> SubmittedRun:
    """Check the arguments, then create a run of the compiled ``package`` and print its dashboard URL.

    Args:
        package: The compiled pipeline YAML.
        arguments: Pipeline parameters, typed (checked against the pipeline's inputs first).
        host: KFP API URL; default :func:`kfp_endpoint`.
        namespace: Kubeflow profile namespace (multi-user); default: the notebook pod's own namespace.
        experiment: Experiment name, created when missing.
        run_name: Display name of the run (default: kfp's, package name and time).
        service_account: Kubernetes ServiceAccount of the run's pods.
        credentials: Default :meth:`Credentials.find`.
        out: Where the URL line goes (default stdout).
    """
    check_arguments(package, arguments)
    host = (host or kfp_endpoint() or "").rstrip("/")
    if not host:
        raise SubmitError("No KFP endpoint: pass --host or set KFP_HOST to the KFP API URL, e.g. "
                          "http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
                          "8080:80` (inside a Kubeflow notebook server the in-cluster API is used).")
    credentials = credentials or Credentials.find()
    if _healthz(host, credentials).get("multi_user") and not namespace:
        if not POD_NAMESPACE_PATH.is_file():
            raise SubmitError(f"The KFP API at {host} is multi-user: pass --namespace <your profile namespace> "
                              "(`kubectl get profiles`, or the namespace shown at the top of the dashboard).")
        namespace = POD_NAMESPACE_PATH.read_text().strip()
    with _api_errors(host, namespace, credentials):
        client = _client(host, credentials)
        with contextlib.redirect_stdout(io.StringIO()):  # kfp prints its own "Experiment/Run details" links
            result = client.create_run_from_pipeline_package(
                str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
                namespace=namespace, service_account=service_account)
    ui = (os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host).rstrip("/")
    run = SubmittedRun(client, result.run_id, f"{ui}/#/runs/details/{result.run_id}", experiment, host,
                       namespace, credentials)
    print(f"Submitted run {run.run_id} to experiment {experiment!r}"
          f"{f' in namespace {namespace!r}' if namespace else ''}: {run.url}", file=out or sys.stdout)
    return run


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def wait_for_run(run: SubmittedRun, *, timeout_s: float | None = None, poll_s: float = 5.0,
                 out: TextIO | None = None) -> Any:
    """Poll the run until it ends; one updating line on a terminal, a plain line per state change otherwise.

    Returns the final ``V2beta1Run``; raises :class:`SubmitError` after ``timeout_s`` seconds.
    """
    out = out or sys.stdout
    tty, start, last = uses_colour(out), time.monotonic(), None
    while True:
        with _api_errors(run.host, run.namespace, run.credentials):
            state = run.client.get_run(run.run_id)
        elapsed = time.monotonic() - start
        line = f"  run {run.run_id}: {state.state} {_clock(elapsed)}"
        if tty:
            out.write(f"\r\x1b[K{line}")
        elif state.state != last:
            out.write(line + "\n")
        out.flush()
        last = state.state
        if state.state in FINAL_STATES:
            if tty:
                out.write("\n")
            return state
        if timeout_s is not None and elapsed > timeout_s:
            if tty:
                out.write("\n")
            raise SubmitError(f"Run {run.run_id} is still {state.state} after {_clock(elapsed)} (--timeout); "
                              f"it goes on in the cluster: {run.url}")
        time.sleep(poll_s)


def submit_and_report(package: Path, params: dict[str, str], *, wait: bool, timeout_s: float | None,
                      poll_s: float, token_file: str | None, cookies: str | None, **options: Any) -> int:
    """``kfp-tabular submit``: typed parameters, the run's URL and, with ``wait``, its end; the exit code."""
    arguments = parse_parameters(package, params)
    run = submit_run(package, arguments, credentials=Credentials.find(token_file, cookies), **options)
    if not wait:
        return 0
    try:
        final = wait_for_run(run, timeout_s=timeout_s, poll_s=poll_s)
    except KeyboardInterrupt:
        print(f"\nStopped waiting; the run goes on in the cluster: {run.url}", file=sys.stderr)
        return 130
    took = _clock((final.finished_at - final.created_at).total_seconds()) if final.finished_at else "?"
    if final.state == "SUCCEEDED":
        print(f"Run {run.run_id} succeeded in {took}: {run.url}")
        return 0
    detail = f": {clause(final.error.message)}" if final.error and final.error.message else ""
    print(f"kfp-tabular: the run {final.state} after {took}{detail}. The failing step's logs: {run.url}",
          file=sys.stderr)
    return 1
