"""What `DefectTask` measures: metric groups with constant memory, the reference's counts at fitted
thresholds, the threshold from a score histogram, and the good images' mean loss.

Per defect type means *the good images plus the images of that type* (a separate set of metric
instances per type, each fed the good images too), so every per-type AUROC / AU-PRO / AP compares that
defect against the same normal data; "all" is fed every image. Every state is a fixed-size histogram or
count (see `tasks.metrics.anomaly`): nothing grows with the number of maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from tasks.metrics.anomaly import AUPRO, DefectPixelScores, PixelAUROC, PixelAveragePrecision

GOOD = "good"
#: the standard metrics of one group, in table order
STANDARD = ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "image_ap")


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
