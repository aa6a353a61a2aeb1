"""The evaluation figures every task writes: a confusion matrix and per-class bars, as PNG bytes.

Matplotlib ``Figure`` objects without pyplot: no GUI backend, no global state.

Example:
    >>> png = confusion_png([[5, 1], [0, 4]], ["cat", "dog"], "accuracy 0.900 (10 images)")
    >>> png[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def figure_png(fig) -> bytes:
    """A finished figure as PNG bytes (tight layout, 100 dpi)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def confusion_png(matrix, labels: Sequence[str], title: str, *, normalize: bool = False) -> bytes:
    """A heatmap of ``matrix[true][predicted]`` with the value in each cell.

    ``normalize``: each row divided by its sum (the share of a true class given
    each prediction: recall on the diagonal), shown with two decimals; for
    counts too large to read (a segmentation's pixels).
    """
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros(matrix.shape, np.float64), where=totals > 0)
    n = len(labels)
    size = max(4.0, 0.6 * n + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true" + (" (each row sums to 1)" if normalize else ""))
    ax.set_title(title, fontsize=9)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            text = f"{matrix[i, j]:.2f}" if normalize else str(matrix[i, j])
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black", fontsize=8)
    return figure_png(fig)


def bars_png(names: Sequence[str], series: Sequence[tuple[str, Sequence[float | None], str]], *, ylabel: str,
             title: str, missing: str = "n/a") -> bytes:
    """Grouped bars per class, ``series`` = ``(label, values, colour)``, values in ``[0, 1]``; a None
    value (nothing to measure) is drawn as ``missing`` written over an empty bar."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.6 * len(names) + 2.0), 3.8))
    ax = fig.subplots()
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    for k, (label, values, color) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(x + offset, [0.0 if v is None else v for v in values], width=width, label=label, color=color)
    for i, value in enumerate(series[0][1] if series else ()):
        if value is None:
            ax.text(i, 0.02, missing, ha="center", va="bottom", rotation=90, fontsize=8)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return figure_png(fig)
