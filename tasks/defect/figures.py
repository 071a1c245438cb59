"""Defect figures: example rows (input, reconstruction, anomaly map, truth, thresholded mask), the
pixel precision-recall curves, and the raw PR counts TensorBoard draws."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from tasks.metrics.anomaly import PixelAveragePrecision

PANEL_COLUMNS = ("input", "reconstruction", "anomaly map", "ground truth", "predicted mask")


def example_rows_figure(
    rows: Sequence[dict[str, Any]], threshold: float, vmax: float, title: str = ""
) -> Figure:
    """One row per example: input | reconstruction | anomaly map (0..vmax) | ground truth | map >= threshold.

    Each row dict holds "image", "recon" (uint8 HWC), "map" (float HW), "mask" (bool HW), "label" (str).
    """
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 5, figsize=(9.0, 1.85 * n + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    titles = [
        *PANEL_COLUMNS[:2],
        f"anomaly map (0 to {vmax:.2g})",
        PANEL_COLUMNS[3],
        f"map >= {threshold:.3f}",
    ]
    for j, name in enumerate(titles):
        axes[0, j].set_title(name, fontsize=8)
    for i, row in enumerate(rows):
        axes[i, 0].imshow(row["image"])
        axes[i, 0].set_ylabel(row["label"], fontsize=8)
        axes[i, 1].imshow(row["recon"])
        axes[i, 2].imshow(row["map"], cmap="inferno", vmin=0.0, vmax=vmax)
        axes[i, 3].imshow(row["mask"], cmap="gray", vmin=0, vmax=1)
        pred = row["map"] >= threshold if math.isfinite(threshold) else np.zeros_like(row["mask"])
        overlay = np.zeros((*pred.shape, 3), np.float32)
        overlay[pred & row["mask"]] = (0.2, 0.9, 0.2)  # hit: green
        overlay[pred & ~row["mask"]] = (0.95, 0.2, 0.2)  # false alarm: red
        overlay[~pred & row["mask"]] = (0.2, 0.4, 1.0)  # missed: blue
        axes[i, 4].imshow(overlay)
    if title:
        fig.suptitle(title + "   (predicted mask: green hit, red false alarm, blue missed)", fontsize=8)
    fig.tight_layout()
    return fig


def pr_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], threshold_point: tuple | None
) -> Figure:
    """Pixel precision-recall curve per group with AP in the legend; the fitted threshold marked on "all"."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (precision, recall, ap) in curves.items():
        ax.plot(recall, precision, lw=1.6 if name == "all" else 0.9, label=f"{name} (AP {ap:.3f})")
    if threshold_point is not None:
        recall, precision, threshold = threshold_point
        ax.plot([recall], [precision], "ko", ms=5, label=f"fitted threshold {threshold:.3f}")
    ax.set_xlabel("recall (pixels)")
    ax.set_ylabel("precision (pixels)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("pixel precision-recall (good images + each type)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def pr_curve_counts(metric: PixelAveragePrecision, points: int = 201) -> dict[str, np.ndarray]:
    """tp/fp/tn/fn/precision/recall at `points` thresholds evenly spaced over the score range (ascending),
    for `SummaryWriter.add_pr_curve_raw`."""
    hist = metric.hist.double().cpu()
    positives, negatives = hist[1].sum(), hist[0].sum()
    # counts at or above each bin's lower edge, lowest threshold first
    tp = torch.flip(torch.cumsum(torch.flip(hist[1], [0]), 0), [0])
    fp = torch.flip(torch.cumsum(torch.flip(hist[0], [0]), 0), [0])
    pick = torch.linspace(0, len(tp) - 1, min(points, len(tp))).round().long()
    tp, fp = tp[pick], fp[pick]
    precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.ones_like(tp))
    recall = tp / positives.clamp(min=1)
    return {
        "true_positive_counts": tp.numpy(),
        "false_positive_counts": fp.numpy(),
        "true_negative_counts": (negatives - fp).numpy(),
        "false_negative_counts": (positives - tp).numpy(),
        "precision": precision.numpy(),
        "recall": recall.numpy(),
        "num_thresholds": len(tp),
    }


def keep_examples(
    examples: dict[str, list[dict[str, Any]]],
    types_cpu: Sequence[int],
    raw: torch.Tensor,
    x_hat: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    type_names: list[str],
    per_type: int,
) -> None:
    """Add to `examples` the first `per_type` images of each type for the figures (a bounded, small copy)."""
    rows = []
    for i, t in enumerate(types_cpu):
        name = type_names[t] if t < len(type_names) else str(t)
        kept = examples.setdefault(name, [])
        if len(kept) + sum(1 for _, n in rows if n == name) < per_type:
            rows.append((i, name))
    if not rows:
        return
    index = torch.tensor([i for i, _ in rows], device=raw.device)
    images = raw[index].cpu().numpy()
    recon = (x_hat[index].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    heat = maps[index].float().cpu().numpy()
    truth = masks[index].cpu().numpy()
    for j, (_, name) in enumerate(rows):
        examples[name].append(
            {"image": images[j], "recon": recon[j], "map": heat[j], "mask": truth[j], "label": name}
        )


def pr_curves_figure(groups: Any, test_results: dict[str, float], pixel_threshold: float) -> Figure:
    """`pr_figure` of every group of a test `DefectEvaluation` (`groups`), the fitted threshold marked
    where the test scalars hold its pixel precision / recall."""
    curves = {}
    for name, group in groups.items():
        precision, recall, _ = group.pixel_ap.precision_recall_curve()
        ap = float(group.pixel_ap.compute()) if group.pixel_ap.hist[1].sum() > 0 else float("nan")
        curves[name] = (precision.numpy(), recall.numpy(), ap)
    point = None
    prf = test_results
    if math.isfinite(prf.get("test/pixel_recall", float("nan"))):
        point = (prf["test/pixel_recall"], prf["test/pixel_precision"], pixel_threshold)
    return pr_figure(curves, point)
