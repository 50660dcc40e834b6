"""kfp-tabular: Kubeflow Pipelines v2 components that take a table to a served, explained model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kfp-tabular")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
