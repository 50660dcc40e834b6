"""KFP shell of ``export_savedmodel``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from kfp_tabular.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_savedmodel(
    model: Input[Model],
    test_data: Input[Dataset],
    savedmodel: Output[Model],
    parity_report: Output[Markdown],
    parity_metrics: Output[Metrics],
    refit_ensemble: bool = False,
):
    """Export the AutoGluon predictor to a TensorFlow SavedModel that TF Serving serves, gated on exact parity.

    The SavedModel's ``serving_default`` signature takes one tensor per original column (numbers as float64,
    text / categories / booleans as strings, missing = NaN or "") and returns ``probabilities`` and ``label``
    (classification) or ``prediction`` (regression). It is checked against AutoGluon on the test split plus
    adversarial rows; the step fails, leaving nothing behind, when any output differs by more than 1e-6.

    Args:
        model: Predictor folder from ``train_autogluon``.
        test_data: Test split from ``ingest_data``, used by the parity gate and the TF Serving warmup file.
        savedmodel: The SavedModel folder (``saved_model.pb``, ``variables/``, ``assets.extra/`` with the
            signature JSON and TF Serving warmup requests); metadata has the signature, classes and parity.
        parity_report: Markdown report: parity numbers, members, signature, graph op types.
        parity_metrics: ``parity_max_abs_diff``, ``parity_rows_checked``, ``label_agreement`` and, after a
            refit, the validation score before and after.
        refit_ensemble: When the best model holds families with no exact export (e.g. NN, KNN, stacked
            models), refit the weighted ensemble over the exportable base models and export that instead.
    """
    from pathlib import Path

    from kfp_tabular.components.export_savedmodel.core import ExportConfig, export

    result = export(Path(model.path), Path(test_data.path), Path(savedmodel.path),
                    ExportConfig(refit_ensemble=refit_ensemble), Path(parity_report.path))
    savedmodel.framework = "tensorflow"
    savedmodel.metadata.update(result.metadata)
    for name, value in result.metrics.items():
        parity_metrics.log_metric(name, value)
