"""TEST DOUBLE: a TF Serving stand-in that loads the model and answers WRONG.

``python -m doubles.skewed_serve <kfp-tabular serve arguments>`` is ``kfp-tabular serve`` with every floating
point output shifted by ``SKEW``: the model loads, reports AVAILABLE, passes readiness and answers in the right
schema, only the numbers are off, as a serving binary with a numerics bug or the wrong model would answer. The
kubelet double starts it for a pod with the ``wrong-answer`` fault; the deploy step's smoke test must catch it.
"""

from __future__ import annotations

import sys

import numpy as np

from kfp_tabular import cli
from kfp_tabular.serving import local_models

SKEW = 1e-3
_run = local_models.LoadedVersion.run


def _skewed_run(self, tensors, outputs=()):  # type: ignore[no-untyped-def]
    results = _run(self, tensors, outputs)
    return {name: value + np.asarray(SKEW, value.dtype) if np.issubdtype(value.dtype, np.floating) else value
            for name, value in results.items()}


local_models.LoadedVersion.run = _skewed_run  # type: ignore[method-assign]

if __name__ == "__main__":
    print("skewed_serve: TEST DOUBLE answering with every float output shifted by", SKEW, flush=True)
    sys.exit(cli.main(["serve", *sys.argv[1:]]))
