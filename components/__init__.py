"""KFP components of kfp-tabular, one folder per component (``core.py`` plain Python, ``component.py`` KFP shell).

Importing this package imports kfp only: heavy libraries are imported inside component bodies and cores.
"""

from kfp_tabular.components.evaluate_model.component import evaluate_model
from kfp_tabular.components.ingest_data.component import ingest_data
from kfp_tabular.components.train_autogluon.component import train_autogluon

__all__ = ["evaluate_model", "ingest_data", "train_autogluon"]
