"""Loading a trained AutoGluon predictor from a ``Model`` artifact folder, with errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp_tabular.errors import ModelError

# Files a finished TabularPredictor.save() leaves behind; a folder missing one of them is a half-written model.
REQUIRED_FILES = ("predictor.pkl", "learner.pkl")


def load_predictor(model_dir: Path) -> Any:
    """Load a ``TabularPredictor`` saved by ``train_autogluon``.

    Raises:
        ModelError: the folder is missing, incomplete, or was saved by another AutoGluon version.
    """
    from autogluon.tabular import TabularPredictor

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"Model folder {model_dir} does not exist: pass the 'model' output of train_autogluon.")
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelError(
            f"Model folder {model_dir} is incomplete (missing {', '.join(missing)}): it is not an AutoGluon "
            "predictor, or its upload was interrupted. Re-run train_autogluon."
        )
    try:
        return TabularPredictor.load(str(model_dir), verbosity=0)
    except Exception as exc:  # AutoGluon raises plain exceptions for version mismatches and corrupt pickles
        raise ModelError(f"Cannot load the AutoGluon predictor in {model_dir}: {exc}") from exc
