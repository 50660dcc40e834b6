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
