"""The `embed` figures of the reference work: first-layer filters, their effect on one digit, the
truncated network's feature maps, and the symbol study's SSD table and predictions (all matplotlib
figures for TensorBoard or PNG)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from datamodules.symbols import SymbolSet
from tasks.embed.symbols import SymbolReport
from visionlab.figures import labelled_grid


def filter_grid_figure(weight: torch.Tensor, cols: int = 4) -> Figure:
    """conv1's filters (F, 1, kh, kw) as a grid, each on its own symmetric colour scale (blue < 0 < red)."""
    w = weight.detach().float().cpu()[:, 0].numpy()
    n = len(w)
    cols = min(cols if n <= 12 else 8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, f) in enumerate(zip(axes.flat, w, strict=False)):
        lim = float(np.abs(f).max()) or 1.0
        ax.imshow(f, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"filter {i}", fontsize=7)
    fig.suptitle(f"conv1: {n} filters {w.shape[1]}x{w.shape[2]}", fontsize=9)
    fig.tight_layout()
    return fig


def filter_response_figure(weight: torch.Tensor, image: torch.Tensor, max_filters: int = 10) -> Figure:
    """Each conv1 filter next to its response on one normalised digit image (1, 28, 28).

    The response is the plain correlation of the filter with the image (no bias, 'same' size), as
    the reference computed it with OpenCV's filter2D.
    """
    w = weight.detach().float().cpu()[:max_filters]
    x = image.detach().float().cpu()[None]
    responses = F.conv2d(x, w, padding=w.shape[-1] // 2)[0].numpy()
    n = len(w)
    pairs_per_row = 2
    rows = math.ceil(n / pairs_per_row)
    fig, axes = plt.subplots(rows, 2 * pairs_per_row, figsize=(5.6, 1.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax_f, ax_r = (
            axes[i // pairs_per_row, 2 * (i % pairs_per_row)],
            axes[i // pairs_per_row, 2 * (i % pairs_per_row) + 1],
        )
        lim = float(w[i].abs().max()) or 1.0
        ax_f.imshow(w[i, 0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax_f.set_title(f"filter {i}", fontsize=7)
        ax_r.imshow(responses[i], cmap="gray")
        ax_r.set_title("response", fontsize=7)
    fig.suptitle("conv1 filters applied to one validation digit", fontsize=9)
    fig.tight_layout()
    return fig


def feature_maps_figure(maps: dict[str, torch.Tensor], image: torch.Tensor, max_maps: int = 8) -> Figure:
    """One digit and the network's activations for it: one row of maps per stage of `feature_maps()`."""
    stages = [(name, m.detach().float().cpu()[0]) for name, m in maps.items()]
    cols = min(max_maps, max(len(m) for _, m in stages))
    fig, axes = plt.subplots(
        len(stages) + 1, cols, figsize=(1.0 * cols, 1.15 * (len(stages) + 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image.detach().float().cpu()[0].numpy(), cmap="gray")
    axes[0, 0].set_title("input", fontsize=6)
    for row, (name, m) in enumerate(stages, start=1):
        for j in range(min(cols, len(m))):
            axes[row, j].imshow(m[j].numpy(), cmap="gray")
        axes[row, 0].set_title(f"{name} {tuple(m.shape)}", fontsize=6, loc="left")
    fig.suptitle("feature maps of the truncated network (first maps of each stage)", fontsize=8)
    fig.tight_layout()
    return fig


def ssd_table_figure(report: SymbolReport) -> Figure:
    """Heat map of the SSD table: rows = each class's first image, columns = every train image."""
    train, names = report.train, report.train.class_names
    table = report.ssd_table.numpy()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * table.shape[1] + 1.5), 1.2 + 0.55 * table.shape[0]))
    ax.imshow(table, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(table.shape[1]), [p.stem for p in train.paths], rotation=70, fontsize=7)
    ax.set_yticks(range(table.shape[0]), [train.paths[i].stem for i in report.ref_index], fontsize=8)
    big = table.max() / 2 if table.size else 0
    for r in range(table.shape[0]):
        for c in range(table.shape[1]):
            ax.text(c, r, f"{table[r, c]:.0f}", ha="center", va="center", fontsize=5,
                    color="white" if table[r, c] > big else "black")  # fmt: skip
    ax.set_title(f"SSD in the embedding: each class's first image vs all ({', '.join(names)})")
    fig.tight_layout()
    return fig


def predictions_figure(
    symbols: SymbolSet, truth: torch.Tensor, pred_1nn: torch.Tensor, pred_knn: torch.Tensor, k: int,
    mean: float, std: float,
) -> Figure:  # fmt: skip
    """The symbol images (as the network sees them) titled `true -> 1-NN / k-NN`, green when both right."""
    names = symbols.class_names
    images = (symbols.images * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)[:, 0].numpy()
    titles = [
        f"{names[int(t)]}->{names[int(a)]}/{names[int(b)]}"
        for t, a, b in zip(truth, pred_1nn, pred_knn, strict=True)
    ]
    colors = [
        "green" if a == t and b == t else ("orange" if a == t or b == t else "red")
        for t, a, b in zip(truth.tolist(), pred_1nn.tolist(), pred_knn.tolist(), strict=True)
    ]
    fig = labelled_grid(np.asarray(images), titles, colors, cols=min(9, max(1, len(images))))
    fig.suptitle(f"true -> 1-NN / {k}-NN (green: both right, orange: one, red: neither)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
