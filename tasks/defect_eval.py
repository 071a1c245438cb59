"""What `DefectTask` measures and draws: metric groups with constant memory, threshold fitting, figures.

Per defect type means *the good images plus the images of that type* (a separate set of metric
instances per type, each fed the good images too), so every per-type AUROC / AU-PRO / AP compares that
defect against the same normal data; "all" is fed every image. Every state is a fixed-size histogram or
count (see `tasks.metrics.anomaly`): nothing grows with the number of maps.
"""

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
from torch import nn
from torchmetrics import Metric

from tasks.metrics.anomaly import (
    AUPRO,
    IMAGE_SCORES,
    DefectPixelScores,
    PixelAUROC,
    PixelAveragePrecision,
)
from visionlab.errors import ConfigError

GOOD = "good"
#: metric settings (`metrics:` in conf/task/defect.yaml) and their defaults
DEFAULT_SETTINGS: dict[str, Any] = {
    "thresholds": [0.1, 0.15, 0.2, 0.3],
    "image_score": "max",
    "smooth_sigma": 4.0,
    # none | zscore: standardise the map per pixel by the good training images' error mean / std
    # (fitted during each training epoch) before the image score; pixel metrics stay on |x - x_hat|.
    "normalize": "none",
    "fpr_limit": 0.3,
    "num_bins": 1000,
    "image_bins": 10000,
    "fallback_quantile": 0.995,
    "examples": 4,
}
NORMALIZE = ("none", "zscore")
#: the standard metrics of one group, in table order
STANDARD = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_ap")


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`DEFAULT_SETTINGS` updated by `settings`; an unknown key or a bad value is a ConfigError naming it."""
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise ConfigError(f"metrics.{key} is not known; expected one of {sorted(DEFAULT_SETTINGS)}")
        merged[key] = value
    thresholds = merged["thresholds"]
    if (
        not isinstance(thresholds, (list, tuple))
        or not thresholds
        or not all(_number(t) and 0 <= t <= 1 for t in thresholds)
    ):
        raise ConfigError(f"metrics.thresholds={thresholds!r} must be a non-empty list of numbers in [0, 1]")
    merged["thresholds"] = [float(t) for t in thresholds]
    if merged["image_score"] not in IMAGE_SCORES:
        raise ConfigError(
            f"metrics.image_score={merged['image_score']!r}: expected one of {list(IMAGE_SCORES)}"
        )
    if merged["normalize"] not in NORMALIZE:
        raise ConfigError(f"metrics.normalize={merged['normalize']!r}: expected one of {list(NORMALIZE)}")
    for key, low, high in (
        ("smooth_sigma", 0, 50),
        ("fpr_limit", 1e-9, 1),
        ("fallback_quantile", 1e-9, 1 - 1e-9),
    ):
        if not _number(merged[key]) or not low <= merged[key] <= high:
            raise ConfigError(f"metrics.{key}={merged[key]!r} must be a number in [{low}, {high}]")
    for key, low in (("num_bins", 2), ("image_bins", 2), ("examples", 0)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"metrics.{key}={value!r} must be an integer >= {low}")
    return merged


class DetectionMetrics(nn.Module):
    """The standard metrics of one group of images: image AUROC / AP on image scores, pixel AUROC / AP,
    AU-PRO up to `fpr_limit`. All binned: histograms of `num_bins` (pixels) / `image_bins` (images)."""

    def __init__(self, fpr_limit: float, num_bins: int, image_bins: int) -> None:
        super().__init__()
        self.pixel_auroc = PixelAUROC(num_bins)
        self.pixel_ap = PixelAveragePrecision(num_bins)
        self.aupro = AUPRO(fpr_limit, num_bins)
        self.image_auroc = PixelAUROC(image_bins)
        self.image_ap = PixelAveragePrecision(image_bins)

    def update(
        self, maps: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
    ) -> None:
        self.pixel_auroc.update(maps, masks)
        self.pixel_ap.update(maps, masks)
        self.aupro.update(maps, masks)
        self.image_auroc.update(scores, labels)
        self.image_ap.update(scores, labels)

    def compute(self) -> dict[str, float]:
        """Each metric as a float; NaN where it is undefined (no defective image / pixel / region seen)."""
        out = {}
        for name in STANDARD:
            try:
                out[name] = float(getattr(self, name).compute())
            except (ValueError, ZeroDivisionError):
                out[name] = float("nan")
        return out

    def reset(self) -> None:
        for name in STANDARD:
            getattr(self, name).reset()


class DefectEvaluation(nn.Module):
    """Everything measured on one split: a `DetectionMetrics` for "all" and per defect type, and the
    reference's pixel scores (`DefectPixelScores`) per type (good included) x threshold."""

    def __init__(self, defect_types: Sequence[str], settings: dict[str, Any]) -> None:
        super().__init__()
        self.defect_types = list(defect_types)
        self.type_names = [GOOD, *self.defect_types]
        args = (settings["fpr_limit"], settings["num_bins"], settings["image_bins"])
        self.groups = nn.ModuleDict(
            {"all": DetectionMetrics(*args), **{t: DetectionMetrics(*args) for t in self.defect_types}}
        )
        self.pixel_scores = DefectPixelScores(settings["thresholds"], self.type_names)
        # Counts at the fitted thresholds (test only; see `set_thresholds`).
        self.at_pixel_threshold: DefectPixelScores | None = None
        self.at_image_threshold: DefectPixelScores | None = None

    def set_thresholds(self, pixel: float, image: float) -> None:
        """Also count predictions at these thresholds (pixel: map >= pixel; image: image score >= image)."""
        device = self.pixel_scores.tp.device
        if math.isfinite(pixel):
            self.at_pixel_threshold = DefectPixelScores([pixel], self.type_names).to(device)
        if math.isfinite(image):
            self.at_image_threshold = DefectPixelScores([image], self.type_names).to(device)

    def update(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        types: torch.Tensor,
        types_cpu: Sequence[int],
        scores: torch.Tensor,
    ) -> None:
        """Add a batch. `types` (N,) type indices on the maps' device (0 = good), `types_cpu` the same as a
        list: group membership is decided on the host, so selecting a group's rows never waits on the device."""
        labels = types > 0
        self.groups["all"].update(maps, masks, scores, labels)
        for k, name in enumerate(self.defect_types, start=1):
            rows = [i for i, t in enumerate(types_cpu) if t in (0, k)]
            if not rows:  # good images belong to every type's group, also in batches without defects
                continue
            index = torch.tensor(rows, device=maps.device)
            self.groups[name].update(maps[index], masks[index], scores[index], labels[index])
        self.pixel_scores.update(maps, masks, types)
        if self.at_pixel_threshold is not None:
            self.at_pixel_threshold.update(maps, masks, types)
        if self.at_image_threshold is not None:
            self.at_image_threshold.update(scores[:, None, None], labels[:, None, None], types)

    def compute(self) -> dict[str, Any]:
        """{"groups": {group: {metric: float}}, "table": reference table, "at_threshold": counts-based
        precision/recall/F1 per group at the fitted thresholds (empty when none were set)}."""
        out: dict[str, Any] = {
            "groups": {name: group.compute() for name, group in self.groups.items()},
            "table": self.pixel_scores.table(),
            "at_threshold": {},
        }
        for level, metric in (("pixel", self.at_pixel_threshold), ("image", self.at_image_threshold)):
            if metric is not None:
                out["at_threshold"][level] = _group_prf(metric, self.defect_types)
        return out

    def reset(self) -> None:
        for group in self.groups.values():
            group.reset()
        self.pixel_scores.reset()
        for metric in (self.at_pixel_threshold, self.at_image_threshold):
            if metric is not None:
                metric.reset()


def _group_prf(metric: DefectPixelScores, defect_types: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision / recall / F1 for "all" (every image) and per type (good images + that type's)."""
    with metric.sync_context():  # all processes' counts under DDP; a no-op in one process
        tp, fp, fn = (s[0].double().cpu() for s in (metric.tp, metric.fp, metric.fn))
    groups = {"all": slice(None), **{t: [0, k] for k, t in enumerate(defect_types, start=1)}}
    out = {}
    for name, rows in groups.items():
        t, f_p, f_n = float(tp[rows].sum()), float(fp[rows].sum()), float(fn[rows].sum())
        precision = t / (t + f_p) if t + f_p else float("nan")
        recall = t / (t + f_n) if t + f_n else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        out[name] = {"precision": precision, "recall": recall, "f1": f1}
    return out


def quantile_threshold(histogram: torch.Tensor, quantile: float, score_range: tuple[float, float]) -> float:
    """The upper edge of the first bin where the cumulative share of `histogram` reaches `quantile`:
    at least that share of the counted scores lies below the returned threshold. NaN if it is empty."""
    counts = histogram.double().cpu()
    total = float(counts.sum())
    if total == 0:
        return float("nan")
    k = int(
        torch.searchsorted(torch.cumsum(counts, 0) / total, torch.tensor([quantile], dtype=torch.float64))
    )
    k = min(k, len(counts) - 1)
    lo, hi = score_range
    return lo + (k + 1) * (hi - lo) / len(counts)


class MaskedMean(Metric):
    """Mean of per-sample values over the samples whose weight is 1 (e.g. the good images only), with
    sum states and no data-dependent indexing, so updating never waits on the device."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weights: torch.Tensor) -> None:
        self.total += (values.double() * weights.double()).sum()
        self.count += weights.double().sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


# ---- figures ----------------------------------------------------------------------------------------

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


def metric_table_markdown(groups: dict[str, dict[str, float]], prf: dict[str, Any] | None = None) -> str:
    """The standard metrics as a Markdown table (TensorBoard's text tab renders it)."""
    head = ["group", *STANDARD]
    if prf:
        head += ["pixel P", "pixel R", "pixel F1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in groups.items():
        cells = [name, *(_fmt(values[k]) for k in STANDARD)]
        if prf and name in prf:
            cells += [_fmt(prf[name][k]) for k in ("precision", "recall", "f1")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table_markdown(table: dict[str, dict[float, dict[str, float]]]) -> str:
    """The reference's scores (recall = Method1, precision = Method2, accuracy = Method3) as Markdown."""
    lines = ["| type | threshold | recall | precision | accuracy |", "|---|---|---|---|---|"]
    for name, by_threshold in table.items():
        for threshold, scores in by_threshold.items():
            cells = [name, f"{threshold:g}", *(_fmt(scores[k]) for k in ("recall", "precision", "accuracy"))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
