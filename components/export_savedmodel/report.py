"""The Markdown parity report shown in the dashboard for ``export_savedmodel``."""

from __future__ import annotations

from typing import Any

from kfp_tabular.components._shared.markdown import table


def render(model_name: str, members: list[Any], signature: Any, result: Any, config: Any, refit: dict[str, Any],
           op_types: set[str]) -> str:
    """Render the report: verdict, parity numbers, members, signature, refit, graph ops."""
    regression = signature.problem_type == "regression"
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
