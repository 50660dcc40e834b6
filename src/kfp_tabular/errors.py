"""Typed errors raised by the component cores.

Every error says what went wrong, where (file, line, column, model) and how to fix it, so that the message
shown in a failed Kubeflow step is enough to act on.
"""


class KfpTabularError(Exception):
    """Base class of every error this library raises on purpose."""


class DataValidationError(KfpTabularError, ValueError):
    """The input table cannot be used: malformed, empty, wrong label, duplicate columns..."""


class DataSourceError(KfpTabularError):
    """The input table cannot be reached: missing file, bucket or key, wrong credentials, unknown scheme."""


class ConfigError(KfpTabularError, ValueError):
    """A component parameter is invalid (bad JSON, unknown preset, negative time limit...)."""


class ModelError(KfpTabularError):
    """A model artifact is missing, half-written or incompatible with the data given to it."""


class UnsupportedModelError(ModelError):
    """The predictor holds a model, feature type or setting that cannot be exported exactly to TensorFlow."""


class ExportParityError(ModelError):
    """The exported SavedModel does not reproduce the AutoGluon predictor within the parity tolerance."""


class IntegrityError(ModelError):
    """A model version has no manifest, or its files do not match it (corrupt, incomplete, or mixed)."""


class VersionConflictError(ModelError):
    """A model version already holds, or is being published with, a different model (another root digest)."""


class ConditionalWriteUnsupportedError(KfpTabularError):
    """The object store ignores conditional writes (``If-None-Match: *``), so a version cannot be claimed safely."""


class VersionSkewError(ModelError):
    """The SavedModel was written by a newer TensorFlow than the serving image runs (ops may be unknown there)."""


class ClusterError(KfpTabularError):
    """The Kubernetes API cannot be used: unreachable, the object is missing, or the step may not do this (RBAC)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of the API answer, when there was one


class RolloutFailed(KfpTabularError):
    """A model version did not roll out, or failed its smoke test; the step rolled back (or says why not)."""


class SmokeTestFailed(RolloutFailed):
    """The rolled-out version does not answer as expected through the Service (status, schema or values)."""


class RollbackFailed(RolloutFailed):
    """Re-applying the previous revision's pod template did not bring the Deployment back to healthy."""


class NoPreviousRevisionError(RolloutFailed):
    """There is no previous revision to roll back to; nothing was changed or deleted."""
