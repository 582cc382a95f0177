"""Heatmaps of comparisons, saved as PNG with matplotlib's Agg backend (no display needed).

The figure size is a function of the grid's shape and label lengths only (`heatmap_size`), and
the PNG is written at that size exactly (no tight bounding box), so callers and tests know what
they get. Cells with no value (NaN: no support) are masked and left blank. Each plotting function
returns the grid it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from labeling.core.errors import InputError  # noqa: E402
from labeling.core.files import atomic_path  # noqa: E402
from labeling.review.compare import Comparison  # noqa: E402

DPI = 100
CELL_INCHES = 0.34
CHAR_INCHES = 0.075  # per character of the longest row label (left margin)
ANNOTATE_MAX_CELLS = 400  # above this, values in the cells would not be legible
TABLE_METRICS = ("agreement", "kappa", "precision", "recall", "f1")


def heatmap_size(rows: int, cols: int, row_label_chars: int, col_label_chars: int) -> tuple[int, int]:
    """Width and height in pixels of a heatmap PNG."""
    width = 2.2 + CHAR_INCHES * row_label_chars + CELL_INCHES * max(cols, 1)
    height = 1.6 + CHAR_INCHES * col_label_chars + CELL_INCHES * max(rows, 1)
    return round(width * DPI), round(height * DPI)


def _save_atomically(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def plot_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str,
    value_label: str,
) -> np.ma.MaskedArray:
    """Draw rows x cols `values` (NaN = blank) to `path`; returns the masked grid drawn."""
    grid = np.ma.masked_invalid(np.asarray(values, dtype=float))
    rows, cols = grid.shape
    width, height = heatmap_size(
        rows, cols, max((len(s) for s in row_labels), default=0), max((len(s) for s in col_labels), default=0)
    )
    low = -1.0 if value_label == "kappa" else 0.0
    colormap = plt.get_cmap("RdYlGn" if low < 0 else "viridis").with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    try:
        image = ax.imshow(grid, cmap=colormap, vmin=low, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(cols), labels=list(col_labels), rotation=60, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(rows), labels=list(row_labels), fontsize=8)
        ax.set_title(title, fontsize=9, loc="left")
        fig.colorbar(image, ax=ax, label=value_label, shrink=0.8)
        if rows * cols <= ANNOTATE_MAX_CELLS:
            for (i, j), value in np.ndenumerate(grid.filled(np.nan)):
                if np.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if value > (low + 1.0) / 2 else "white",
                    )
        _save_atomically(fig, Path(path))
    finally:
        plt.close(fig)
    return grid


def comparison_heatmap(comparison: Comparison, metric: str, path: str | Path) -> np.ma.MaskedArray:
    """Region level: findings x regions of `metric`; image level: findings x the metrics."""
    title = (
        f"{comparison.run} vs {comparison.reference} ({comparison.level} level, uncertain: "
        f"{comparison.uncertain}, {comparison.reports:,} reports)"
    )
    if comparison.level == "region":
        return plot_heatmap(
            comparison.grid(metric), comparison.findings, comparison.regions, path, f"{title}: {metric}", metric
        )
    values = np.stack([comparison.finding_values(m) for m in TABLE_METRICS], axis=1)
    return plot_heatmap(values, comparison.findings, TABLE_METRICS, path, title, "value")


def runs_heatmap(comparisons: Sequence[Comparison], metric: str, path: str | Path) -> np.ma.MaskedArray:
    """Findings x runs: `metric` of each run against the shared reference."""
    if not comparisons:
        raise InputError("no comparison to plot")
    first = comparisons[0]
    values = np.stack([c.finding_values(metric) for c in comparisons], axis=1).reshape(len(first.findings), -1)
    title = (
        f"{metric} against {first.reference} ({first.level} level, uncertain: {first.uncertain}, "
        f"{first.reports:,} reports)"
    )
    return plot_heatmap(values, first.findings, [c.run for c in comparisons], path, title, metric)
