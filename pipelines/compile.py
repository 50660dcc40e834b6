"""Compiling pipelines to KFP IR YAML, the file uploaded from the Kubeflow dashboard or submitted by a client."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from kfp_tabular.pipelines.tabular_training import tabular_training


def compile_pipeline(output: Path, pipeline_parameters: dict | None = None) -> Path:
    """Write the ``tabular-training`` pipeline as IR YAML to ``output`` and return the path.

    The image every step runs is the one ``kfp_tabular.components._image.IMAGE`` resolved at import time
    (``KFP_TABULAR_IMAGE`` overrides it), so set that variable before importing this module.

    Args:
        output: Destination ``.yaml`` file; parent folders are created.
        pipeline_parameters: Optional new defaults for pipeline parameters.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        pipeline_func=tabular_training,
        package_path=str(output),
        pipeline_parameters=pipeline_parameters,
    )
    return output
