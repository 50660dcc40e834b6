"""The ``tabular-training`` pipeline: ingest → train → evaluate (→ blessed? → export), explain beside evaluate.

The pipeline only composes: every Kubernetes concern (the S3 Secret, CPU and memory) is attached here, never in
the components, so the same components run unchanged through ``kfp.local``.
"""

from kfp import dsl, kubernetes

from kfp_tabular.components._image import IMAGE
from kfp_tabular.components.deploy_tf_serving.component import deploy_tf_serving
from kfp_tabular.components.evaluate_model.component import evaluate_model
from kfp_tabular.components.explain_shap.component import (
    explain_shap,
    explain_shap_shard,
    plan_explain_shards,
)
from kfp_tabular.components.explain_shap.shards import MAX_PARALLEL_SHARDS
from kfp_tabular.components.export_savedmodel.component import export_savedmodel
from kfp_tabular.components.ingest_data.component import ingest_data
from kfp_tabular.components.optimize_tensorrt.component import optimize_tensorrt
from kfp_tabular.components.publish_model.component import publish_model
from kfp_tabular.components.train_autogluon.component import train_autogluon

PIPELINE_NAME = "tabular-training"

# Keys of the Kubernetes Secret that holds the S3 / MinIO connection, mapped to the environment variables
# components/_shared/s3.py reads. Credentials never travel as pipeline parameters: those are public in KFP.
S3_SECRET_KEYS = {
    "S3_ENDPOINT": "S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
}
# Keys a Secret may leave out (plain-HTTP MinIO needs none of them).
S3_OPTIONAL_SECRET_KEYS = {
    "S3_USE_HTTPS": "S3_USE_HTTPS",
    "AWS_REGION": "AWS_REGION",
    "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
}


def _s3_credentials(task: dsl.PipelineTask, secret_name: str) -> None:
    """S3 settings from the Kubernetes Secret, as environment variables (never as parameters).

    optional=True: builtin:// and volume paths need no Secret; s3:// without it fails with a clear message. The
    KFP driver puts the flag on every secretKeyRef, so a Secret lacking an optional key leaves that variable unset
    instead of failing the pod; the optional keys get their own call so they stay optional even if the required
    ones are ever made mandatory.
    """
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_SECRET_KEYS, optional=True)
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_OPTIONAL_SECRET_KEYS,
                                 optional=True)


def _resources(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
    """Request and cap CPU and memory (ignored, with a warning, by kfp.local)."""
    return task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Table to blessed, explained TensorFlow SavedModel: ingest, AutoGluon, evaluate, SHAP, export.",
)
def tabular_training(
    source_uri: str = "builtin://penguins",
    label: str = "species",
    problem_type: str = "auto",
    file_format: str = "auto",
    encoding: str = "utf-8",
    drop_columns: str = "",
    bad_values: str = "error",
    min_rows: int = 50,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.2,
    eval_metric: str = "auto",
    presets: str = "deployable",
    time_limit_s: int = 120,
    hyperparameters: str = "",
    seed: int = 0,
    thresholds: str = "",
    baseline_metrics: str = "",
    explain_method: str = "auto",
    explain_background_size: int = 100,
    explain_max_rows: int = 500,
    explain_sample_budget: int = 512,
    explain_time_budget_s: float = 300.0,
    explain_target_standard_error: float = 0.001,
    explain_rows_per_shard: int = 2000,
    refit_ensemble: bool = False,
    model_repository_uri: str = "",
    model_version: int = 0,
    require_conditional_writes: bool = True,
    deploy: bool = False,
    serving_namespace: str = "kfp-tabular",
    allow_version_skew: bool = False,
    s3_secret_name: str = "kfp-tabular-s3",
    optimize_gpu: bool = False,
    optimize_precision: str = "fp32",
    optimize_max_batch_size: int = 1024,
):
    """Train, evaluate, explain and (when blessed) export an AutoGluon model for a table.

    Args:
        source_uri: Table location: ``s3://bucket/key``, a path on a mounted volume, or ``builtin://penguins``.
        label: Column to predict.
        problem_type: ``auto``, ``binary``, ``multiclass`` or ``regression``.
        file_format: ``auto`` (by extension), ``csv``, ``parquet`` or ``jsonl``.
        encoding: Text encoding of a CSV / JSON Lines source (``utf-8``, ``latin-1``…).
        drop_columns: Columns to leave out (IDs, copies of the label, unusable types): ``a,b`` or a JSON list.
        bad_values: Stray values in a column of numbers or dates: ``error``, ``missing`` or ``text``.
        min_rows: Fewest labelled rows accepted; smaller tables are refused (50: 10 test rows with the default
            fractions).
        validation_fraction: Share of rows in the validation split (AutoGluon's tuning data).
        test_fraction: Share of rows in the held-out test split that evaluation and the blessing use.
        eval_metric: AutoGluon metric name or ``auto``.
        presets: ``deployable`` (exports exactly to TensorFlow) or an AutoGluon preset.
        time_limit_s: Training budget in seconds.
        hyperparameters: Optional AutoGluon hyperparameters as JSON.
        seed: Seed of the split and the fit.
        thresholds: JSON minimum metrics for blessing, e.g. ``{"accuracy": 0.9}``.
        baseline_metrics: JSON metrics of the model in production; the new one must not be worse.
        explain_method: ``auto``, ``exact_tree``, ``sampled_tree``, ``permutation`` or ``kernel``.
        explain_background_size: Background rows sampled from the train split for SHAP.
        explain_max_rows: Test rows explained.
        explain_sample_budget: Model evaluations per row for the sampling explainers (permutation, kernel).
        explain_time_budget_s: Longest the sampling explainers may take; the step fails early, with the projected
            time, when the rows would not fit.
        explain_target_standard_error: Standard error the sampled tree explainer stops at (probability scale), when
            exact enumeration would cost more.
        explain_rows_per_shard: Most rows one explanation pod explains; more rows to explain are cut into shards
            that run as parallel pods (``dsl.ParallelFor``, at most 16 at once) and are merged by ``explain-shap``.
            The time budget applies per shard.
        refit_ensemble: Export a weighted ensemble refitted over exportable models only.
        model_repository_uri: Where to publish the blessed SavedModel as a numbered, checksummed version
            (``s3://bucket/models/<name>`` or a folder); empty: do not publish.
        model_version: Version to publish as; 0: the next free one.
        require_conditional_writes: Refuse an S3 store that ignores ``If-None-Match`` (two publishers could
            claim one version there); False: accept it, safe with one publisher at a time only.
        deploy: Roll the published version out to the TF Serving Deployment of ``serving_namespace``, smoke-test it
            and roll back on failure. Needs a cluster with manifests/ applied and the run's service account
            bound to the ``kfp-tabular-deployer`` Role (``kfp-tabular submit --service-account``).
        serving_namespace: Namespace of the TF Serving Deployment (manifests/).
        allow_version_skew: Deploy a model written by a newer TensorFlow than the serving image (recorded, not
            refused); only when you know the versions are compatible.
        s3_secret_name: Kubernetes Secret with ``S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``
            and optionally ``S3_USE_HTTPS``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``, ``AWS_SESSION_TOKEN``.
        optimize_gpu: After the export, build a TensorRT engine (optimize_tensorrt) on one NVIDIA GPU node
            (accelerator nvidia.com/gpu, toleration of the nvidia.com/gpu taint); needs the GPU image.
        optimize_precision: ``fp32`` (parity within 1e-5) or ``fp16`` (ModelOpt AutoCast, its own bound).
        optimize_max_batch_size: Largest batch of the engine's dynamic batch profile.
    """
    ingest = ingest_data(
        source_uri=source_uri,
        label=label,
        problem_type=problem_type,
        file_format=file_format,
        encoding=encoding,
        drop_columns=drop_columns,
        bad_values=bad_values,
        min_rows=min_rows,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    _s3_credentials(ingest, s3_secret_name)
    _resources(ingest, "1", "2Gi")

    train = train_autogluon(
        train_data=ingest.outputs["train_data"],
        validation_data=ingest.outputs["validation_data"],
        label=label,
        problem_type=problem_type,
        eval_metric=eval_metric,
        presets=presets,
        time_limit_s=time_limit_s,
        hyperparameters=hyperparameters,
        seed=seed,
    )
    _resources(train, "4", "16Gi")

    evaluate = evaluate_model(
        model=train.outputs["model"],
        test_data=ingest.outputs["test_data"],
        thresholds=thresholds,
        baseline_metrics=baseline_metrics,
    )
    _resources(evaluate, "1", "4Gi")

    # Explanation: the rows are cut into shards of at most explain_rows_per_shard, one pod each, then merged.
    plan = plan_explain_shards(explain_data=ingest.outputs["test_data"], max_rows=explain_max_rows,
                               rows_per_shard=explain_rows_per_shard)
    _resources(plan, "0.5", "1Gi")
    with dsl.ParallelFor(plan.output, parallelism=MAX_PARALLEL_SHARDS, name="explain-shards") as shard:
        part = explain_shap_shard(
            model=train.outputs["model"],
            background_data=ingest.outputs["train_data"],
            explain_data=ingest.outputs["test_data"],
            shard=shard,
            method=explain_method,
            background_size=explain_background_size,
            max_rows=explain_max_rows,
            sample_budget=explain_sample_budget,
            time_budget_s=explain_time_budget_s,
            target_standard_error=explain_target_standard_error,
            seed=seed,
        )
        _resources(part, "2", "8Gi")
        # The exact SHAP kernels use numba, which would otherwise start one thread per host core, not per CPU limit.
        part.set_env_variable("NUMBA_NUM_THREADS", "2")
    explain = explain_shap(shards=dsl.Collected(part.outputs["explanation"]))
    _resources(explain, "1", "4Gi")

    # The gate reads evaluate_model's return value ("Output"): kfp.local 2.17 resolves only that output name in
    # conditions and silently treats a named output (e.g. NamedTuple "blessed") as False.
    with dsl.If(evaluate.outputs["Output"] == True, name="model-blessed"):  # noqa: E712 (KFP condition DSL)
        export = export_savedmodel(
            model=train.outputs["model"],
            test_data=ingest.outputs["test_data"],
            refit_ensemble=refit_ensemble,
        )
        _resources(export, "2", "8Gi")

        with dsl.If(optimize_gpu == True, name="optimize-gpu-requested"):  # noqa: E712 (KFP condition DSL)
            optimize = optimize_tensorrt(savedmodel=export.outputs["savedmodel"],
                                         test_data=ingest.outputs["test_data"], precision=optimize_precision,
                                         max_batch_size=optimize_max_batch_size)
            _resources(optimize, "4", "16Gi")
            optimize.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            kubernetes.add_toleration(optimize, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")

        with dsl.If(model_repository_uri != "", name="publish-requested"):
            publish = publish_model(
                savedmodel=export.outputs["savedmodel"],
                repository_uri=model_repository_uri,
                version=model_version,
                require_conditional_writes=require_conditional_writes,
                train_data=ingest.outputs["train_data"],
                model=train.outputs["model"],
            )
            _s3_credentials(publish, s3_secret_name)
            # The lineage records the image the steps ran with (a digest when compiled with --image).
            publish.set_env_variable("KFP_TABULAR_IMAGE", IMAGE)
            _resources(publish, "1", "2Gi")

            with dsl.If(deploy == True, name="deploy-requested"):  # noqa: E712 (KFP condition DSL)
                rollout = deploy_tf_serving(published_model=publish.outputs["published_model"],
                                            namespace=serving_namespace, allow_version_skew=allow_version_skew)
                _s3_credentials(rollout, s3_secret_name)  # reads the version's manifest from the repository
                _resources(rollout, "1", "2Gi")
