"""The `embed` figures of the reference work: first-layer filters, their effect on one digit, and the
truncated network's feature maps (all matplotlib figures for TensorBoard or PNG)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure


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
