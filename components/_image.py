"""The container images the components run in: one CPU image for every step, and its GPU variant.

``IMAGE`` defaults to ``<registry>/kfp-tabular:<package version>``; ``KFP_TABULAR_IMAGE`` overrides it (Skaffold
injects a digest-pinned reference this way, and ``kfp-tabular compile --image`` sets it). ``GPU_IMAGE`` is the
Dockerfile's ``gpu`` target (the same venv plus TensorRT), ``<registry>/kfp-tabular:<version>-gpu`` unless
``KFP_TABULAR_GPU_IMAGE`` says otherwise; only ``optimize_tensorrt`` runs in it. Read at import time, because the
``@dsl.component`` decorators bind the image when the components module is imported.
"""

import os

from kfp_tabular import __version__

REGISTRY = os.environ.get("KFP_TABULAR_REGISTRY", "ghcr.io/kfp-tabular")
DEFAULT_IMAGE = f"{REGISTRY}/kfp-tabular:{__version__}"
IMAGE = os.environ.get("KFP_TABULAR_IMAGE") or DEFAULT_IMAGE
GPU_IMAGE = os.environ.get("KFP_TABULAR_GPU_IMAGE") or f"{REGISTRY}/kfp-tabular:{__version__}-gpu"
