"""Figures of the `segment` task: colour overlays of ground truth and predictions with a class legend,
and a row-normalised confusion matrix of pixel counts."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from datamodules.voc_format import VOC_PALETTE, VOID


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) label indices -> (H, W, 3) uint8 VOC colours (void = 255 is cream)."""
    return VOC_PALETTE[np.asarray(labels, dtype=np.uint8)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend the colour of each labelled pixel into `image`; background (0) pixels stay as they are."""
    colours = colorize(labels).astype(np.float32)
    out = image.astype(np.float32)
    painted = labels != 0
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    return out.clip(0, 255).astype(np.uint8)


def overlay_panel(
    images: np.ndarray,
    targets: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
) -> Figure:
    """One row per sample: the image, the ground truth overlay, then one overlay per (title, predictions).

    `images` (N, H, W, 3) uint8, `targets` (N, H, W) with 255 = void, each predictions array (N, H, W).
    A legend below names the colour of every class and of void.
    """
    n = len(images)
    cols = 2 + len(predictions)
    legend_cols = 5
    legend_rows = -(-(len(class_names) + 1) // legend_cols)
    legend_height = 0.1 + 0.2 * legend_rows  # inches
    height = 2.2 * n + legend_height
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, height), squeeze=False)
    titles = ["image", "ground truth", *(title for title, _ in predictions)]
    for row in range(n):
        panels = [images[row], overlay(images[row], targets[row])]
        panels += [overlay(images[row], preds[row]) for _, preds in predictions]
        for col, panel in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
    handles = [
        Patch(facecolor=VOC_PALETTE[k] / 255.0, edgecolor="black", label=f"{k} {name}")
        for k, name in enumerate(class_names)
    ]
    handles.append(Patch(facecolor=VOC_PALETTE[VOID] / 255.0, edgecolor="black", label="255 void"))
    fig.legend(handles=handles, loc="lower center", ncol=legend_cols, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    return fig
