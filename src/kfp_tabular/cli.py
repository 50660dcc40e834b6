"""``kfp-tabular``: compile the pipeline, run it locally, submit it to Kubeflow, predict with an export.

Imports of kfp, the components and heavy libraries happen inside the sub-commands, after ``--image`` has been
put in the environment: the component decorators read the image when their module is first imported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from kfp_tabular import __version__
from kfp_tabular.errors import KfpTabularError

DEFAULT_YAML = Path("dist/tabular_training.yaml")


def _set_image(image: str | None, gpu_image: str | None = None) -> None:
    if image:
        os.environ["KFP_TABULAR_IMAGE"] = image
    if gpu_image:
        os.environ["KFP_TABULAR_GPU_IMAGE"] = gpu_image


SKAFFOLD_ARTIFACT = "kfp-tabular"  # the artifact's `image` in skaffold.yaml


def image_from_build_output(path: Path, image_name: str = SKAFFOLD_ARTIFACT) -> str:
    """The reference Skaffold built for ``image_name``, read from ``skaffold build --file-output=<path>``.

    Skaffold writes ``{"builds": [{"imageName": "<artifact image>", "tag": "<reference>"}]}``
    (``flags.BuildOutput`` in cmd/skaffold/app/flags/build_output.go). A pushed image's tag is
    ``<repo>:<tag>@sha256:<registry digest>``; an image kept in the local daemon (``push: false``) is
    ``<repo>:<image id>`` and has no registry digest.
    """
    from kfp_tabular.errors import ConfigError

    expected = json.dumps({"builds": [{"imageName": image_name, "tag": "<repo>:<tag>@sha256:<digest>"}]})
    try:
        builds = json.loads(Path(path).read_text())["builds"]
        tags = [b["tag"] for b in builds if b.get("imageName") == image_name]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a `skaffold build --file-output` file ({type(exc).__name__}: {exc}); "
                          f"expected {expected}") from exc
    if len(tags) != 1 or not isinstance(tags[0], str) or not tags[0]:
        built = sorted(str(b.get("imageName")) for b in builds if isinstance(b, dict))
        raise ConfigError(f"{path}: expected one build of image {image_name!r}, found {built or 'none'}; "
                          f"build it with `skaffold build --file-output={path}`")
    if "@sha256:" not in tags[0]:
        print(f"kfp-tabular: {tags[0]} is not pinned by a registry digest (the image was not pushed); a cluster "
              "can run it only if the image was loaded into its nodes (kind, minikube)", file=sys.stderr)
    return tags[0]


def _cmd_compile(args: argparse.Namespace) -> int:
    if args.build_output is not None:
        args.image = image_from_build_output(args.build_output)
        if args.print_image:
            print(args.image)
            return 0
    _set_image(args.image, args.gpu_image)
    from kfp_tabular.components._image import IMAGE
    from kfp_tabular.pipelines.compile import compile_pipeline

    path = compile_pipeline(args.output)
    print(f"Wrote {path} (image {IMAGE}). Upload it from the Kubeflow dashboard or run `kfp-tabular submit`.")
    return 0


def _run_arguments(args: argparse.Namespace) -> dict:
    arguments = {"source_uri": args.data, "label": args.label, "time_limit_s": args.time_limit}
    optional = {
        "problem_type": args.problem_type,
        "presets": args.presets,
        "hyperparameters": args.hyperparameters,
        "thresholds": args.thresholds,
        "baseline_metrics": args.baseline_metrics,
        "seed": args.seed,
        "file_format": args.file_format,
        "encoding": args.encoding,
        "drop_columns": args.drop_columns,
        "bad_values": args.bad_values,
        "eval_metric": args.eval_metric,
        "refit_ensemble": True if args.refit_ensemble else None,
        "model_repository_uri": args.model_repository,
        "require_conditional_writes": False if args.allow_unconditional_store else None,
        "min_rows": args.min_rows,
        "validation_fraction": args.validation_fraction,
        "test_fraction": args.test_fraction,
        "explain_method": args.explain_method,
        "explain_background_size": args.explain_background_size,
        "explain_max_rows": args.explain_max_rows,
        "explain_sample_budget": args.explain_sample_budget,
        "explain_time_budget_s": args.explain_time_budget,
        "explain_target_standard_error": args.explain_target_se,
        "explain_rows_per_shard": args.explain_rows_per_shard,
    }
    arguments.update({k: v for k, v in optional.items() if v is not None})
    return arguments


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    from kfp_tabular.console import StepConsole
    from kfp_tabular.pipelines.local_run import run_pipeline_locally
    from kfp_tabular.pipelines.summary import summarize

    if args.serve and not args.model_repository:
        args.model_repository = str((Path(args.output) / "models" / "tabular").resolve())
    arguments = _run_arguments(args)
    log_path = Path(args.output) / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    print(f"Running tabular-training locally on {args.data} (label {args.label!r}); outputs in {args.output}/")
    print(f"Full logs: {log_path}" + ("" if args.verbose else " (--verbose shows them here)"), flush=True)
    with StepConsole(log_path, sys.stdout, verbose=args.verbose) as console:
        try:
            run = run_pipeline_locally(arguments, Path(args.output))
        except RuntimeError:  # kfp.local's "task ... finished with status FAILURE"
            run = None
    failure = console.failure()
    if run is None or failure is not None:
        step, error = (failure.step, failure.error) if failure else ("the run", "kfp.local stopped the run")
        print(f"\n{step} failed: {error}", file=sys.stderr)
        print(f"Full logs, with the traceback: {log_path}", file=sys.stderr)
        return 1
    print()
    print(summarize(run))
    print(f"\nFull logs: {log_path}")
    if args.serve:
        return _serve_one_prediction(run, args.model_repository, None if args.verbose else log_path)
    return 0


@contextlib.contextmanager
def _stderr_into(log_path: Path | None):
    """Send file descriptor 2 (C++ runtime logs included) to the end of ``log_path``; None leaves it alone."""
    if log_path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _serve_one_prediction(run, repository: str, log_path: Path | None = None) -> int:
    """Publish happened in the run: serve the repository locally and show one prediction through it.

    TensorFlow loads here, in this process, and its C++ runtime writes to file descriptor 2 before any log level
    applies (oneDNN, CPU features, CUDA probing): with ``log_path`` that goes to the run's log file.
    """
    if "publish-model" not in run.tasks:
        print("\nSERVED: nothing, the model was not blessed and so not published.")
        return 0
    from kfp_tabular.serving.first_request import predict_once, request_rows

    with _stderr_into(log_path):
        rows = request_rows(run.tasks["ingest-data"].path("test_data"), repository)
        answer = predict_once(repository, rows)
    print(f"\nSERVED (kfp-tabular serve, the local stand-in for TF Serving): version {answer.version} of {repository}")
    print(f"  POST {answer.url}")
    print(f"  {json.dumps(answer.request)}")
    print(f"  -> {json.dumps(answer.response)}")
    print(f"  Serve it yourself: kfp-tabular serve --model-repository {repository}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from kfp_tabular.components.export_savedmodel.predict import predict_rows
    from kfp_tabular.errors import DataSourceError, DataValidationError

    try:
        payload = json.loads(Path(args.json).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataSourceError(f"Cannot read --json {args.json}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationError(
            f"--json {args.json} is not UTF-8 JSON ({exc}); write a TF Serving REST body such as "
            '{"instances": [{column: value, ...}]}.'
        ) from None
    # TensorFlow's C++ runtime writes its start-up log (oneDNN, CUDA probing) to fd 2 before any log level applies
    with _stderr_into(None if args.verbose else Path(os.devnull)):
        answer = predict_rows(Path(args.model), payload)
    print(json.dumps(answer, indent=2))
    return 0


def fetch_timeouts(args: argparse.Namespace):  # -> S3Timeouts; kept lazy: the import pulls in nothing heavy
    """S3 timeouts of fetch-model / publish: the flags, else ``S3_CONNECT_TIMEOUT_S`` etc., else the defaults."""
    from kfp_tabular.components._shared.s3 import S3Timeouts

    return S3Timeouts.from_env(connect_s=args.connect_timeout, read_s=args.read_timeout, retries=args.retries)


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    import logging
    import signal

    from kfp_tabular.serving.fetch import fetch_model

    # Kubernetes stops an init container with SIGTERM; turning it into SystemExit runs the clean-up of the
    # staging folder instead of dying on the spot.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.INFO, format="kfp-tabular fetch-model: %(message)s", stream=sys.stdout)
    path = fetch_model(args.source_uri, args.dest, args.version, timeouts=fetch_timeouts(args),
                       require_manifest=not args.allow_missing_manifest)
    print(f"Model version {path.name} is ready in {path}.")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    import logging

    from kfp_tabular.serving.repository import publish_savedmodel

    logging.basicConfig(level=logging.INFO, format="kfp-tabular publish: %(message)s", stream=sys.stderr)
    os.environ.update({name: str(value) for name, value in (
        ("S3_CONNECT_TIMEOUT_S", args.connect_timeout), ("S3_READ_TIMEOUT_S", args.read_timeout),
        ("S3_RETRIES", args.retries)) if value is not None})
    result = publish_savedmodel(args.savedmodel, args.repository_uri, args.version,
                                require_conditional_writes=not args.allow_unconditional_store)
    if result.status == "unchanged":
        print(f"Version {result.version} at {result.uri} already holds this model (root digest "
              f"{result.root_digest}); nothing was uploaded.")
    else:
        print(f"Published version {result.version} at {result.uri}: {result.files} files, root digest "
              f"{result.root_digest} ({result.commit_mechanism}).")
    return 0


def _add_s3_timeout_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="S3 connect timeout per attempt (default $S3_CONNECT_TIMEOUT_S or 5)")
    p.add_argument("--read-timeout", type=float, metavar="SECONDS",
                   help="S3 wait for an answer per attempt (default $S3_READ_TIMEOUT_S or 30)")
    p.add_argument("--retries", type=int, help="S3 retries after a timeout or 5xx (default $S3_RETRIES or 2)")


def _parse_param(item: str) -> tuple[str, str]:
    """``NAME=VALUE`` as text; ``submit`` types it as the compiled pipeline declares the parameter."""
    name, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"kfp-tabular: error: --param {item!r} is not NAME=VALUE")
    return name, text


def _cmd_submit(args: argparse.Namespace) -> int:
    _set_image(args.image, args.gpu_image)
    from kfp_tabular.pipelines.compile import compile_pipeline
    from kfp_tabular.submit import submit_and_report

    return submit_and_report(
        compile_pipeline(args.output), dict(_parse_param(item) for item in args.param), wait=args.wait,
        timeout_s=args.timeout, poll_s=args.poll_seconds, token_file=args.token_file, cookies=args.cookies,
        host=args.host, namespace=args.namespace, experiment=args.experiment, run_name=args.run_name,
        service_account=args.service_account)


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kfp_tabular.serving.local_server import LocalServer, parse_labels

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="kfp-tabular serve: %(message)s", stream=sys.stderr)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    server = LocalServer(args.model_repository, args.model_name, args.host, args.port, args.grpc_port,
                         args.poll_seconds, parse_labels(args.version_label), args.threads, args.cache_dir)
    with server:
        print(server.describe(), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kfp-tabular`` command."""
    parser = argparse.ArgumentParser(prog="kfp-tabular", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kfp-tabular {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="write the pipeline as KFP IR YAML")
    p.add_argument("--output", type=Path, default=DEFAULT_YAML)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--image",
                        help="component image (default: $KFP_TABULAR_IMAGE or <registry>/kfp-tabular:<ver>)")
    source.add_argument("--build-output", type=Path, metavar="BUILD_JSON",
                        help="use the image Skaffold built: the file of `skaffold build --file-output=BUILD_JSON`")
    p.add_argument("--print-image", action="store_true",
                   help="with --build-output: print the image reference it names and exit without compiling")
    p.add_argument("--gpu-image", help="image of the optimize_tensorrt step, the Dockerfile's gpu target (default: "
                   "$KFP_TABULAR_GPU_IMAGE or <registry>/kfp-tabular:<ver>-gpu)")
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("run", help="run the whole pipeline on this machine through kfp.local")
    p.add_argument("--data", default="builtin://penguins", help="source URI (path, s3://, builtin://penguins)")
    p.add_argument("--label", default="species", help="column to predict")
    p.add_argument("--time-limit", type=int, default=60, help="AutoGluon training budget in seconds")
    p.add_argument("--output", default="local_outputs", help="folder for the run's artifacts")
    p.add_argument("--problem-type", choices=["auto", "binary", "multiclass", "regression"])
    p.add_argument("--presets", help="AutoGluon preset (default: deployable)")
    p.add_argument("--hyperparameters", help="AutoGluon hyperparameters as JSON")
    p.add_argument("--thresholds", help='blessing thresholds as JSON, e.g. {"accuracy": 0.9}')
    p.add_argument("--baseline-metrics", help="metrics of the production model as JSON")
    p.add_argument("--seed", type=int)
    p.add_argument("--file-format", choices=["auto", "csv", "parquet", "jsonl"], help="default: from the extension")
    p.add_argument("--encoding", help="text encoding of a CSV / JSON Lines file (default utf-8), e.g. latin-1")
    p.add_argument("--drop-columns", help='columns to leave out: a,b or a JSON list such as \'["label "]\'')
    p.add_argument("--bad-values", choices=["error", "missing", "text"],
                   help="stray values in a column of numbers or dates: fail (default), read as missing, keep as text")
    p.add_argument("--eval-metric", help="AutoGluon metric (default: auto)")
    p.add_argument("--refit-ensemble", action="store_true",
                   help="export a weighted ensemble refitted over the exportable models only")
    p.add_argument("--model-repository", help="publish the blessed model as the next version of this repository "
                   "(a folder or s3://bucket/models/<name>)")
    p.add_argument("--allow-unconditional-store", action="store_true",
                   help="publish to an S3 store that ignores If-None-Match (safe with one publisher at a time only)")
    p.add_argument("--serve", action="store_true", help="then serve the published model locally (a stand-in for "
                   "TF Serving) and show one prediction; publishes to <output>/models/tabular by default")
    p.add_argument("--min-rows", type=int, help="refuse a table with fewer labelled rows (default 50)")
    p.add_argument("--validation-fraction", type=float, help="share of rows in the validation split (default 0.15)")
    p.add_argument("--test-fraction", type=float, help="share of rows in the test split (default 0.2)")
    p.add_argument("--explain-method", choices=["auto", "exact_tree", "sampled_tree", "permutation", "kernel"],
                   help="SHAP method (default auto: exact TreeSHAP when the ensemble allows it)")
    p.add_argument("--explain-background-size", type=int, help="background rows for SHAP (default 100)")
    p.add_argument("--explain-max-rows", type=int, help="test rows explained (default 500)")
    p.add_argument("--explain-sample-budget", type=int,
                   help="model evaluations per row for the sampling explainers (default 512)")
    p.add_argument("--explain-time-budget", type=float,
                   help="seconds the sampling explainers may take before the step fails (default 300)")
    p.add_argument("--explain-target-se", type=float,
                   help="standard error the sampled tree explainer stops at, on the probability scale (default 0.001)")
    p.add_argument("--explain-rows-per-shard", type=int,
                   help="most rows one explanation step explains; more are cut into shards run as parallel steps "
                   "and merged (default 2000)")
    p.add_argument("--verbose", action="store_true", help="show KFP's full executor logs here, not only in the log file")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("predict", help="predict with an exported SavedModel (TF Serving REST JSON in and out)")
    p.add_argument("--model", required=True, help="SavedModel folder (export_savedmodel output)")
    p.add_argument("--json", required=True, help='file with {"instances": [{column: value, ...}, ...]} or '
                   '{"inputs": {column: [values...]}}; columns by original or by tensor names, not a mix')
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up log on stderr")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("submit", help="compile and submit a run to Kubeflow Pipelines; prints the run's URL",
                       description="Compile the pipeline, check the parameters against it, submit a run with "
                       "kfp.Client and print its page in the dashboard. Credentials: --token-file, --cookies, "
                       "else the ServiceAccount token a Kubeflow notebook server mounts ($KF_PIPELINES_SA_TOKEN_PATH).")
    p.add_argument("--host", default=os.environ.get("KFP_HOST"),
                   help="KFP API URL (default $KFP_HOST; in a Kubeflow notebook server: the in-cluster API)")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--experiment", default="kfp-tabular")
    p.add_argument("--run-name")
    p.add_argument("--image", help="component image reference, ideally digest-pinned")
    p.add_argument("--gpu-image", help="image of the optimize_tensorrt step (the Dockerfile's gpu target)")
    p.add_argument("--output", type=Path, default=DEFAULT_YAML)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter, typed as the pipeline declares it (repeatable)")
    p.add_argument("--service-account", help="service account of the run's pods; kfp-tabular-deployer (manifests/) "
                   "for a run with deploy=true")
    p.add_argument("--token-file", help="file holding a bearer token for the KFP API (default $KFP_TOKEN_FILE)")
    p.add_argument("--cookies", help="cookies of a dashboard login, e.g. 'authservice_session=...' "
                   "(default $KFP_COOKIES)")
    p.add_argument("--wait", action="store_true", help="follow the run to its end; exit 1 unless it succeeds")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after this long")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="with --wait: seconds between two checks")
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser(
        "serve",
        help="LOCAL STAND-IN for TF Serving: serve a model repository with TF Serving's REST API (and gRPC)",
        description="A LOCAL STAND-IN for TF Serving, to try a model without a cluster; production serving is "
        "TF Serving. It speaks TF Serving's REST API (model status, metadata, :predict in row and columnar "
        "format, version and label paths, Prometheus metrics at /monitoring/prometheus/metrics) and, with "
        "--grpc-port, its gRPC PredictionService and ModelService. It serves the latest complete version "
        "<repository>/<N>/ and picks up a newer one while running. S3 credentials come from S3_ENDPOINT, "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
    )
    p.add_argument("--model-repository", required=True,
                   help="s3://bucket/prefix/<model>, a folder or file:///folder holding <version>/ SavedModels")
    p.add_argument("--model-name", help="name in request paths (default: the repository's last path segment)")
    p.add_argument("--port", type=int, default=8501, help="REST port (default 8501, as TF Serving; 0: a free one)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (TF Serving uses 8500; default: no gRPC)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    p.add_argument("--poll-seconds", type=float, default=1.0,
                   help="seconds between two listings of the repository (default 1, as TF Serving)")
    p.add_argument("--version-label", action="append", default=[], metavar="LABEL=VERSION",
                   help="a version label for /labels/<label> paths, e.g. stable=3 (repeatable)")
    p.add_argument("--threads", type=int, help="requests served at once (default 4 per CPU, as TF Serving)")
    p.add_argument("--cache-dir", type=Path, help="where S3 versions are copied (default: a temporary folder)")
    p.add_argument("--verbose", action="store_true", help="log one line per request")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "fetch-model",
        help="copy one SavedModel version from S3/MinIO or a folder into <dest>/<version>/ for TF Serving",
        description="Download, verify, then rename into place: a partial or corrupt model leaves no version "
        "folder and exits non-zero. S3 credentials come from S3_ENDPOINT, AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY.",
    )
    p.add_argument("--source-uri", required=True, help="s3://bucket/path/<version>, a folder or file:///folder")
    p.add_argument("--dest", required=True, type=Path, help="TF Serving base_path of the model, e.g. /models/tabular")
    p.add_argument("--version", type=int, help="model version when the URI does not end in one")
    _add_s3_timeout_flags(p)
    p.add_argument("--allow-missing-manifest", action="store_true",
                   help="accept a local SavedModel folder without manifest.json (older exports; never for s3://)")
    p.set_defaults(func=_cmd_fetch_model)

    p = sub.add_parser(
        "publish",
        help="publish a SavedModel as the next (or a given) version of a model repository, manifest last",
        description="Upload every file of the SavedModel to <repository>/<version>/, then manifest.json with an "
        "exclusive create (If-None-Match: * on S3), so two publishers never share a version. Publishing the same "
        "model again uploads nothing. S3 credentials come from S3_ENDPOINT, AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY.",
    )
    p.add_argument("--savedmodel", required=True, type=Path, help="SavedModel folder (export_savedmodel output)")
    p.add_argument("--repository-uri", required=True,
                   help="s3://bucket/prefix/<model_name>, a folder or file:///folder")
    p.add_argument("--version", type=int, help="version to publish as (default: the next free one)")
    _add_s3_timeout_flags(p)
    p.add_argument("--allow-unconditional-store", action="store_true",
                   help="accept an S3 store that ignores If-None-Match (safe with one publisher at a time only)")
    p.set_defaults(func=_cmd_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kfp-tabular`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KfpTabularError as exc:
        print(f"kfp-tabular: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
