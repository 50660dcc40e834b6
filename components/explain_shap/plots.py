"""Matplotlib figures of a SHAP explanation: importance bars, beeswarm, dependence and waterfall plots.

Drawn with plain matplotlib (Agg backend) so the HTML report can inline them as PNG and needs no JavaScript.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def color_scale(column: pd.Series) -> np.ndarray:
    """Feature values mapped to [0, 1] for colouring: numeric by rank, categorical by code; NaN stays NaN."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        ranks = column.rank(pct=True)
        return ranks.to_numpy(dtype=np.float64)
    codes = pd.Categorical(column.astype(object).where(column.notna(), None)).codes.astype(np.float64)
    codes[codes < 0] = np.nan
    top = np.nanmax(codes) if np.isfinite(codes).any() else 0.0
    return codes / top if top > 0 else np.where(np.isnan(codes), np.nan, 0.5)


def importance_bars(importance: np.ndarray, features: list[str], outputs: list[str],
                    shown: list[int] | None = None) -> Any:
    """Horizontal bars of mean |SHAP| per feature, stacked by output (class) when there are several.

    ``shown``: the outputs drawn as their own segment (default all); the others are summed in one segment.
    """
    plt = _pyplot()
    order = np.argsort(importance.sum(axis=1))
    shown = list(range(len(outputs))) if shown is None else list(shown)
    segments = [(outputs[k], importance[order, k], None) for k in shown]
    rest = np.setdiff1d(np.arange(len(outputs)), shown)
    if len(rest):
        segments.append((f"{len(rest)} other classes", importance[order][:, rest].sum(axis=1), "#bbbbbb"))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(features) + 1.2))
    left = np.zeros(len(features))
    for name, widths, colour in segments:
        ax.barh(np.arange(len(features)), widths, left=left, label=name, color=colour)
        left += widths
    ax.set_yticks(np.arange(len(features)), [features[i] for i in order])
    ax.set_xlabel("mean |SHAP value|")
    if len(outputs) > 1:
        ax.legend(title="class", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def beeswarm(values: np.ndarray, rows: pd.DataFrame, features: list[str], title: str, max_features: int = 12) -> Any:
    """One dot per row and feature at its SHAP value, coloured by the feature's value (low blue → high red)."""
    plt = _pyplot()
    order = np.argsort(np.abs(values).mean(axis=0))[::-1][:max_features][::-1]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(order) + 1.4))
    scatter = None
    for position, g in enumerate(order):
        shap_g = values[:, g]
        colours = color_scale(rows[features[g]])
        jitter = _swarm_offsets(shap_g, rng)
        known = ~np.isnan(colours)
        ax.scatter(shap_g[~known], position + jitter[~known], s=9, c="#999999", alpha=0.8, linewidths=0)
        scatter = ax.scatter(shap_g[known], position + jitter[known], s=9, c=colours[known], cmap="coolwarm",
                             vmin=0, vmax=1, alpha=0.85, linewidths=0)
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_yticks(np.arange(len(order)), [features[g] for g in order])
    ax.set_xlabel("SHAP value (impact on the model output)")
    ax.set_title(title, fontsize=11)
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax, ticks=[0, 1], fraction=0.04, pad=0.02)
        bar.ax.set_yticklabels(["low", "high"])
        bar.set_label("feature value (grey: missing)")
    fig.tight_layout()
    return fig


def _swarm_offsets(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vertical spread proportional to how crowded each value's neighbourhood is."""
    if len(values) < 2 or np.ptp(values) == 0:
        return rng.uniform(-0.3, 0.3, len(values)) * (len(values) > 1)
    bins = np.clip(((values - values.min()) / np.ptp(values) * 50).astype(int), 0, 50)
    counts = np.bincount(bins, minlength=51)[bins]
    return rng.uniform(-1, 1, len(values)) * 0.4 * counts / counts.max()


def dependence(values: np.ndarray, column: pd.Series, feature: str, output: str) -> Any:
    """SHAP value of one feature against its value: scatter for numbers, strip per category otherwise."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        known = column.notna().to_numpy()
        ax.scatter(column.to_numpy(dtype=np.float64)[known], values[known], s=12, alpha=0.7, color="#1f77b4")
        if (~known).any():
            ax.scatter(np.full((~known).sum(), np.nanmin(column) if known.any() else 0.0), values[~known], s=12,
                       marker="x", color="#999999", label="missing")
            ax.legend(fontsize=8)
        ax.set_xlabel(feature)
    else:
        labels = column.astype(object).where(column.notna(), "(missing)").astype(str)
        categories = sorted(labels.unique())
        positions = labels.map({c: i for i, c in enumerate(categories)}).to_numpy()
        rng = np.random.default_rng(0)
        ax.scatter(positions + rng.uniform(-0.15, 0.15, len(positions)), values, s=12, alpha=0.7, color="#1f77b4")
        ax.set_xticks(np.arange(len(categories)), categories, rotation=30, ha="right")
        ax.set_xlabel(feature)
    ax.axhline(0, color="#555555", linewidth=0.8)
    ax.set_ylabel(f"SHAP value ({output})")
    fig.tight_layout()
    return fig


def waterfall(values: np.ndarray, base: float, features: list[str], row: pd.Series, output: str,
              max_features: int = 10) -> Any:
    """How one row's prediction is built from the base value, largest contributions first."""
    plt = _pyplot()
    order = list(np.argsort(np.abs(values))[::-1])
    shown, rest = order[:max_features], order[max_features:]
    labels = [f"{features[g]} = {_short(row[features[g]])}" for g in shown]
    steps = [float(values[g]) for g in shown]
    if rest:
        labels.append(f"{len(rest)} other features")
        steps.append(float(values[rest].sum()))
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(steps) + 1.6))
    path = base + np.concatenate([[0.0], np.cumsum(steps)])
    low, high = float(path.min()), float(path.max())
    pad = 0.15 * (high - low or 1.0)  # room for the value labels (bars' sticky edges defeat ax.margins)
    ax.set_xlim(low - pad, high + pad)
    start = base
    for position, step in enumerate(steps):
        y = len(steps) - 1 - position
        ax.barh(y, step, left=start, color="#d62728" if step > 0 else "#1f77b4")
        ax.text(start + step, y, f" {step:+.3g}", va="center", ha="left" if step >= 0 else "right", fontsize=8)
        start += step
    ax.set_yticks(np.arange(len(steps)), labels[::-1])
    ax.axvline(base, color="#555555", linewidth=0.8, linestyle="--")
    ax.axvline(start, color="#000000", linewidth=0.8)
    ax.set_xlabel(f"{output}: base {base:.4g} → prediction {start:.4g}")
    fig.tight_layout()
    return fig


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "missing" if np.isnan(value) else f"{value:.4g}"
    text = "missing" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."
