"""The one container image every component runs in.

Defaults to ``<registry>/kfp-tabular:<package version>``; ``KFP_TABULAR_IMAGE`` overrides it (Skaffold injects a
digest-pinned reference this way, and ``kfp-tabular compile --image`` sets it). Read at import time, because the
``@dsl.component`` decorators bind the image when the components module is imported.
"""

import os

from kfp_tabular import __version__

REGISTRY = os.environ.get("KFP_TABULAR_REGISTRY", "ghcr.io/kfp-tabular")
DEFAULT_IMAGE = f"{REGISTRY}/kfp-tabular:{__version__}"
IMAGE = os.environ.get("KFP_TABULAR_IMAGE") or DEFAULT_IMAGE
