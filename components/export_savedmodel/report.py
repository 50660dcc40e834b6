"""The Markdown parity report shown in the dashboard for ``export_savedmodel``."""

from __future__ import annotations

from typing import Any

from kfp_tabular.components._shared.markdown import table
from kfp_tabular.components.export_savedmodel.graph import PORTABLE_SIGNATURE_KEY


def render(model_name: str, members: list[Any], signature: Any, result: Any, config: Any, refit: dict[str, Any],
           op_types: set[str], refused_rows: int = 0) -> str:
    """Render the report: verdict, parity numbers, members, signature, refit, graph ops."""
    regression = signature.problem_type == "regression"
    forests = [m.name for m in members if any(getattr(c, "float32_checked", ()) for c in m.children)]
    tolerance_rule = ("|delta| <= tolerance x max(1, |y|)" if regression else
                      "|delta probability| <= tolerance and 100 % label agreement")
    lines = [
        f"# SavedModel export of `{model_name}`",
        "",
        f"**Parity gate: {'passed' if result.passed else 'FAILED'}** ({tolerance_rule}, tolerance {config.tolerance:g}).",
        "",
        table(
            ["rows checked", "of which adversarial", "max abs diff", "max scaled diff", "label agreement"],
            [[result.rows_checked, result.adversarial_rows, result.max_abs_diff, result.max_scaled_diff,
              "n/a" if regression else f"{result.label_agreement:.2%}"]],
            digits=3,
        ),
        "",
        *([f"{refused_rows} test row(s) hold values the exported model refuses (see below); they were not "
           "compared.", ""] if refused_rows else []),
        "## Members",
        "",
        table(
            ["model", "family", "weight", "children", "max abs diff vs AutoGluon"],
            [[m.name, m.family, m.weight, len(m.children), result.member_diffs.get(m.name, float("nan"))]
             for m in members],
            digits=4,
        ),
        "",
        "## Signature `serving_default`",
        "",
        table(
            ["input", "column", "dtype", "used by the model"],
            [[c.name, c.column, c.dtype, "yes" if c.used else "no (ignored)"] for c in signature.inputs],
        ),
        "",
        "Outputs: " + ", ".join(f"`{name}` {kind}" for name, kind in signature.outputs.items()) + ".",
        "",
        f"Signature `{PORTABLE_SIGNATURE_KEY}` is the same graph without the subnormal guard (TensorFlow reads "
        "subnormal numbers as 0, so `serving_default` reads them by their bits first): convert it with "
        f"`python -m tf2onnx.convert --saved-model DIR --signature_def {PORTABLE_SIGNATURE_KEY}` (tf2onnx cannot "
        "convert `serving_default`'s Bitcast); onnxruntime keeps subnormals. The gate checked it on the rows "
        "without subnormal inputs.",
        "",
        "Refused requests (`InvalidArgumentError` naming the columns and the first row; TF Serving answers the "
        "whole request with it): an infinite value in a numeric input; "
        + (f"a value beyond the float32 range in a column read by {', '.join(forests)} (scikit-learn refuses it); "
           if forests else "")
        + "an output that is not finite. In ONNX such rows come back as NaN with an empty label.",
    ]
    if signature.class_labels:
        lines.append("Classes (probability column order): " + ", ".join(f"`{c}`" for c in signature.class_labels) + ".")
    if signature.decision_threshold is not None:
        lines.append(f"Binary decision threshold: {signature.decision_threshold:g} (label = positive if p > threshold).")
    if refit:
        lines += [
            "",
            "## Refitted ensemble",
            "",
            f"`{refit['refit_model_old']}` holds models that cannot be exported exactly "
            f"({refit['refit_blocking_models']}); the weighted ensemble was refitted over "
            f"{refit['refit_base_models']} as `{refit['refit_model_new']}`.",
            "",
            table(
                ["", f"validation {refit['refit_eval_metric']}"],
                [["original", refit["refit_score_val_old"]], ["exported", refit["refit_score_val_new"]],
                 ["change", refit["refit_score_val_delta"]]],
                digits=5,
            ),
        ]
    lines += ["", f"Graph op types ({len(op_types)}): " + ", ".join(f"`{op}`" for op in sorted(op_types)) + "."]
    return "\n".join(lines) + "\n"
