"""Matplotlib figures shared by the tasks: written to TensorBoard and, by evaluate.py, as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def confusion_figure(
    matrix: np.ndarray, class_names: Sequence[str], title: str = "confusion matrix", percent: bool = False
) -> Figure:
    """Row-normalised colour (rows = true class, columns = predicted); cells show counts, or with
    `percent` the share of the true class (for pixel counts too large to read)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.58 * n, 1.0 + 0.52 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                pct = 100 * rates[i, j]
                text = (f"{pct:.0f}" if pct >= 1 else "<1") if percent else str(int(matrix[i, j]))
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                    in_layout=False,  # inside the axes: tight_layout need not measure 144 texts
                )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def roc_figure(
    fpr: Sequence[np.ndarray], tpr: Sequence[np.ndarray], class_names: Sequence[str], aucs: Sequence[float]
) -> Figure:
    """One-vs-rest ROC curve per class with its AUC in the legend."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for f, t, name, auc in zip(fpr, tpr, class_names, aucs, strict=True):
        ax.plot(np.asarray(f), np.asarray(t), lw=1, label=f"{name} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one class vs rest")
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def labelled_grid(images: np.ndarray, titles: Sequence[str], colors: Sequence[str], cols: int = 8) -> Figure:
    """A grid of uint8 HWC images, each with a coloured title (e.g. green = correct, red = wrong)."""
    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title, color in zip(axes.flat, images, titles, colors, strict=False):
        ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None)
        ax.set_title(title, fontsize=7, color=color)
        ax.add_patch(
            Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, edgecolor=color, linewidth=3)
        )
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
