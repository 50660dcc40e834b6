"""Pipelines of kfp-tabular: they only compose components from ``kfp_tabular.components``."""

from kfp_tabular.pipelines.tabular_training import PIPELINE_NAME, tabular_training

__all__ = ["PIPELINE_NAME", "tabular_training"]
