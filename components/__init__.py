"""KFP components of kfp-tabular, one folder per component (``core.py`` plain Python, ``component.py`` KFP shell).

The components are loaded lazily (PEP 562): inside a running step the KFP executor sets ``_KFP_RUNTIME=true``,
which removes ``dsl.component``, and the step imports its core through this package. Importing the shells here
eagerly would break every step.
"""

from importlib import import_module
from typing import Any

__all__ = ["evaluate_model", "explain_shap", "export_savedmodel", "ingest_data", "train_autogluon"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(f"{__name__}.{name}.component"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
