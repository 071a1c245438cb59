"""Anomaly-detection metrics on per-pixel anomaly maps, all with memory that does not grow with the data.

- `DefectPixelScores`: the reference's three pixel scores per defect type and threshold, from integer
  confusion counts.
- `AUPRO`: the official MVTec AD area under the per-region-overlap curve up to a false-positive rate
  limit; binned (a histogram per threshold, O(bins) memory) by default, exact (stores every score) for
  small sets.
- `PixelAUROC` / `PixelAveragePrecision`: pixel-level ROC AUC and AP from per-bin histograms of the
  defective and normal pixels' scores (O(bins) memory, O(pixels) time). torchmetrics' binned
  `BinaryAUROC(thresholds=K)` has the same memory but compares every pixel with every threshold:
  about 5 minutes on CPU for ten 1024x1024 maps, so it is not used here. For exact values on small
  sets use torchmetrics with `thresholds=None` (stores every pixel).
- `image_scores`: one score per image (Gaussian-smoothed map, then max or 99th percentile).
- `f1_optimal_threshold`: the threshold maximising F1 on a validation precision/recall curve.

Anomaly maps are expected in [0, 1] (|x - x_hat| of images in [0, 1]); a pixel is predicted
defective when its score is >= the threshold, as in torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchvision.transforms.functional import gaussian_blur

from visionlab.errors import ConfigError

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


class DefectPixelScores(Metric):
    """Per defect type x threshold: recall |fault ∩ pred|/|fault|, precision |fault ∩ pred|/|pred|, accuracy.

    Accumulates tp/fp/fn/tn pixel counts (int64, shape (thresholds, types)), so memory is constant.
    `compute()` returns (types, thresholds, 3) float64 with [recall, precision, accuracy]; a ratio
    with an empty denominator (e.g. recall on good images) is NaN.
    """

    full_state_update = False
    SCORES = ("recall", "precision", "accuracy")

    def __init__(
        self,
        thresholds: Sequence[float] = (0.1, 0.15, 0.2, 0.3),
        defect_types: Sequence[str] = ("crack", "cut", "hole", "print"),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not thresholds or not defect_types:
            raise ConfigError("DefectPixelScores: thresholds and defect_types must be non-empty lists")
        self.thresholds = [float(t) for t in thresholds]
        self.defect_types = [str(d) for d in defect_types]
        shape = (len(self.thresholds), len(self.defect_types))
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor, defect_type_index: torch.Tensor) -> None:
        """Add a batch: `maps` (N, H, W) float, `masks` (N, H, W) bool, `defect_type_index` (N,) long."""
        masks = masks.bool()
        onehot = torch.nn.functional.one_hot(defect_type_index.long(), len(self.defect_types))  # (N, D)
        pixels = masks[0].numel()
        for t, threshold in enumerate(self.thresholds):
            pred = maps >= threshold
            tp = (pred & masks).flatten(1).sum(1)
            fp = pred.flatten(1).sum(1) - tp
            fn = masks.flatten(1).sum(1) - tp
            tn = pixels - tp - fp - fn
            for state, counts in ((self.tp, tp), (self.fp, fp), (self.fn, fn), (self.tn, tn)):
                state[t] += (counts[:, None] * onehot).sum(0)  # per-type sum without atomics

    def compute(self) -> torch.Tensor:
        """(types, thresholds, 3): recall, precision, accuracy."""
        tp, fp, fn, tn = (s.double().T for s in (self.tp, self.fp, self.fn, self.tn))
        recall = tp / (tp + fn)
        precision = tp / (tp + fp)
        accuracy = (tp + tn) / (tp + fp + fn + tn)
        return torch.stack([recall, precision, accuracy], dim=-1)

    def table(self) -> dict[str, dict[float, dict[str, float]]]:
        """`compute()` as {defect type: {threshold: {recall, precision, accuracy}}} of plain floats."""
        values = self.compute().tolist()
        return {
            d: {t: dict(zip(self.SCORES, values[i][j], strict=True)) for j, t in enumerate(self.thresholds)}
            for i, d in enumerate(self.defect_types)
        }


class AUPRO(Metric):
    """Official MVTec AD AU-PRO: area under the per-region-overlap curve up to `fpr_limit`, divided by it.

    Ground-truth regions are the 8-connected components of each image's mask. At a threshold t,
    FPR = normal pixels scoring >= t / all normal pixels, and PRO = mean over all regions (of all
    images) of the fraction of the region scoring >= t. Equal scores form one threshold. The curve,
    closed by (0, 0) and (1, 1), is integrated with the trapezoid rule up to `fpr_limit`,
    interpolating the last segment.

    `num_bins=None` (exact) keeps every score (float32) and a per-pixel region weight: the official
    computation, for small sets only. `num_bins=B` (default 1000) uses B thresholds evenly spaced over
    `score_range` and keeps, per bin, the normal-pixel count and the sum over regions of
    (region pixels in bin / region size): O(B) memory however many maps. Scores are floored onto the
    bin grid (out-of-range ones clamped), so binned equals exact when no two distinct scores share a bin.
    """

    full_state_update = False

    def __init__(
        self,
        fpr_limit: float = 0.3,
        num_bins: int | None = 1000,
        score_range: tuple[float, float] = (0.0, 1.0),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 < fpr_limit <= 1.0:
            raise ConfigError(f"fpr_limit={fpr_limit}: expected a value in (0, 1]")
        if num_bins is not None and (not isinstance(num_bins, int) or num_bins < 2):
            raise ConfigError(f"num_bins={num_bins}: expected an integer >= 2, or null for the exact mode")
        lo, hi = (float(v) for v in score_range)
        if not hi > lo:
            raise ConfigError(f"score_range={score_range}: expected (low, high) with high > low")
        self.fpr_limit, self.num_bins, self.score_range = float(fpr_limit), num_bins, (lo, hi)
        self.add_state("num_regions", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        if num_bins is None:
            self.add_state("scores", [], dist_reduce_fx="cat")
            self.add_state("region_weights", [], dist_reduce_fx="cat")
        else:
            self.add_state("normal_hist", torch.zeros(num_bins, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state("overlap_hist", torch.zeros(num_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor) -> None:
        """Add a batch: `maps` (N, H, W) float scores, `masks` (N, H, W) bool ground truth."""
        if maps.shape != masks.shape or maps.ndim != 3:
            raise ValueError(
                f"AUPRO.update: maps {tuple(maps.shape)} and masks {tuple(masks.shape)} must be (N, H, W)"
            )
        masks_np = masks.bool().cpu().numpy()
        labels = np.stack([ndimage.label(m, structure=EIGHT_CONNECTED)[0] for m in masks_np])
        labels = torch.from_numpy(labels).to(maps.device)
        for image_scores, image_labels in zip(maps.detach(), labels, strict=True):
            self._update_image(image_scores.flatten(), image_labels.flatten().long())

    def _update_image(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        num_regions = int(labels.max())
        self.num_regions += num_regions
        if self.num_bins is None:
            sizes = torch.bincount(labels, minlength=num_regions + 1).float()
            weights = torch.where(labels > 0, 1.0 / sizes[labels], 0.0)
            self.scores.append(scores.float())
            self.region_weights.append(weights)
            return
        bins = _to_bins(scores, self.num_bins, self.score_range)
        # Integer (regions + 1) x bins counts: row 0 is the normal pixels, row k region k.
        counts = torch.bincount(labels * self.num_bins + bins, minlength=(num_regions + 1) * self.num_bins)
        counts = counts.view(num_regions + 1, self.num_bins)
        self.normal_hist += counts[0]
        if num_regions:
            regions = counts[1:].double()
            self.overlap_hist += (regions / regions.sum(1, keepdim=True)).sum(0)

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The (FPR, PRO) curve in float64, ordered by increasing FPR and closed by (0, 0) and (1, 1)."""
        if self.num_bins is None:
            scores = dim_zero_cat(self.scores).double()
            weights = dim_zero_cat(self.region_weights).double()
            order = torch.argsort(scores, descending=True)
            scores, weights = scores[order], weights[order]
            fp = torch.cumsum((weights == 0).double(), 0)
            overlap = torch.cumsum(weights, 0)
            last_of_tie = torch.ones_like(scores, dtype=torch.bool)
            last_of_tie[:-1] = scores[1:] != scores[:-1]
            fp, overlap = fp[last_of_tie], overlap[last_of_tie]
            num_normal = fp[-1] if len(fp) else fp.new_zeros(())
        else:
            # From the highest threshold down: pixels scoring at or above each bin's lower edge.
            fp = torch.cumsum(torch.flip(self.normal_hist, [0]), 0).double()
            overlap = torch.cumsum(torch.flip(self.overlap_hist, [0]), 0)
            num_normal = self.normal_hist.sum().double()
        if num_normal == 0 or self.num_regions == 0:
            raise ValueError("AUPRO needs both normal pixels and at least one defect region in the data seen")
        fpr = (fp / num_normal).clamp(0, 1).cpu().numpy()
        pro = (overlap / self.num_regions.double()).clamp(0, 1).cpu().numpy()
        return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], pro, [1.0]])

    def compute(self) -> torch.Tensor:
        """AU-PRO in [0, 1] (float64 scalar)."""
        fpr, pro = self.curve()
        return torch.tensor(_trapezoid_to(fpr, pro, self.fpr_limit) / self.fpr_limit, dtype=torch.float64)


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [0, x_max], interpolating y at x_max (MVTec's `trapezoid`)."""
    keep = x <= x_max
    area = float(np.sum(0.5 * (y[keep][1:] + y[keep][:-1]) * np.diff(x[keep])))
    if x_max not in x:
        i = int(np.searchsorted(x, x_max, side="right"))  # first x > x_max; x[i - 1] < x_max
        y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y_at + y[i - 1]) * (x_max - x[i - 1])
    return area


class _PixelHistogram(Metric):
    """Histograms of defective and normal pixel scores over `num_bins` bins of `score_range`.

    Threshold k is the lower edge of bin k; a pixel counts as predicted defective at threshold k when
    its (floored, clamped) bin is >= k. Equal to the exact metric when no two distinct scores share a bin.
    """

    full_state_update = False

    def __init__(self, num_bins: int = 1000, score_range: tuple[float, float] = (0.0, 1.0), **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_bins, int) or num_bins < 2:
            raise ConfigError(f"num_bins={num_bins}: expected an integer >= 2")
        lo, hi = (float(v) for v in score_range)
        if not hi > lo:
            raise ConfigError(f"score_range={score_range}: expected (low, high) with high > low")
        self.num_bins, self.score_range = num_bins, (lo, hi)
        self.add_state("hist", torch.zeros(2, num_bins, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor) -> None:
        """Add maps (any shape, float) and their masks (same shape, bool: True = defective pixel)."""
        bins = _to_bins(maps.detach().flatten(), self.num_bins, self.score_range)
        index = masks.flatten().long() * self.num_bins + bins
        self.hist += torch.bincount(index, minlength=2 * self.num_bins).view(2, self.num_bins)

    def _counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(true positives, false positives) per threshold, from the highest threshold down (float64)."""
        cumulative = torch.cumsum(torch.flip(self.hist, [1]), dim=1).double()
        return cumulative[1], cumulative[0]

    def thresholds(self) -> torch.Tensor:
        """The bin lower edges, ascending (float64)."""
        lo, hi = self.score_range
        return lo + torch.arange(self.num_bins, dtype=torch.float64) * (hi - lo) / self.num_bins

    def precision_recall_curve(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(precision, recall, thresholds), thresholds ascending; precision = 1 where nothing is predicted."""
        tp, fp = (torch.flip(c, [0]) for c in self._counts())
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.ones_like(tp))
        recall = tp / tp[0].clamp(min=1)
        return precision.cpu(), recall.cpu(), self.thresholds()


class PixelAUROC(_PixelHistogram):
    """Pixel-level ROC AUC (trapezoid over the binned ROC curve); constant memory."""

    def compute(self) -> torch.Tensor:
        """AUROC in [0, 1] (float64 scalar); NaN unless both defective and normal pixels were seen."""
        tp, fp = self._counts()
        tpr = torch.cat([tp.new_zeros(1), tp / tp[-1]])
        fpr = torch.cat([fp.new_zeros(1), fp / fp[-1]])
        return torch.trapezoid(tpr, fpr)


class PixelAveragePrecision(_PixelHistogram):
    """Pixel-level average precision, sum over thresholds of (recall step) x precision; constant memory."""

    def compute(self) -> torch.Tensor:
        """AP in [0, 1] (float64 scalar); NaN when no defective pixel was seen."""
        tp, fp = self._counts()
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), torch.ones_like(tp))
        recall_step = torch.diff(tp, prepend=tp.new_zeros(1)) / tp[-1]
        return (recall_step * precision).sum()


def _to_bins(scores: torch.Tensor, num_bins: int, score_range: tuple[float, float]) -> torch.Tensor:
    """Bin index of each score: floor onto `num_bins` equal bins of `score_range`, clamped to the ends."""
    lo, hi = score_range
    scaled = (scores.double() - lo) * (num_bins / (hi - lo))
    return scaled.floor().clamp(0, num_bins - 1).long()


IMAGE_SCORES = ("max", "p99", "top1")


def image_scores(
    maps: torch.Tensor,
    mode: str = "max",
    smooth_sigma: float = 4.0,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> torch.Tensor:
    """One anomaly score per image (N,) from maps (N, H, W).

    With `mean` and `std` (H, W), the per-pixel error statistics of good images, each map is first
    standardised, (map - mean) / std, so pixels where good images always reconstruct badly (the rim,
    the tip, bright texture) no longer decide the score. Then the map is smoothed with a Gaussian of
    `smooth_sigma` pixels (0 = no smoothing; kernel size 2*ceil(3 sigma)+1) so a single noisy pixel
    does not decide; then "max" takes the maximum, "p99" the 99th percentile (nearest rank) and
    "top1" the mean of the highest 1% of the pixels (at least one). Standardised scores are squashed
    into (0, 1) by sigmoid(score / 10), monotone, so the image AUROC / AP histograms over [0, 1] keep
    their order.
    """
    if mode not in IMAGE_SCORES:
        raise ConfigError(f"image_score={mode!r}: expected one of {list(IMAGE_SCORES)}")
    if smooth_sigma < 0:
        raise ConfigError(f"smooth_sigma={smooth_sigma}: expected >= 0")
    maps = maps.float()
    standardised = mean is not None and std is not None
    if standardised:
        maps = (maps - mean.to(maps)) / std.to(maps)
    if smooth_sigma > 0:
        kernel = 2 * int(np.ceil(3 * smooth_sigma)) + 1
        maps = gaussian_blur(maps[:, None], [kernel, kernel], [smooth_sigma, smooth_sigma])[:, 0]
    flat = maps.flatten(1)
    if mode == "max":
        scores = flat.max(dim=1).values
    elif mode == "top1":
        k = max(1, flat.shape[1] // 100)
        scores = flat.topk(k, dim=1).values.mean(dim=1)
    else:
        rank = max(1, int(np.ceil(0.99 * flat.shape[1])))
        scores = flat.kthvalue(rank, dim=1).values
    return torch.sigmoid(scores / 10) if standardised else scores


def f1_optimal_threshold(
    precision: torch.Tensor, recall: torch.Tensor, thresholds: torch.Tensor
) -> tuple[float, float]:
    """(threshold, F1) maximising F1 = 2PR/(P+R) over a validation PR curve.

    Takes `PixelAveragePrecision.precision_recall_curve()` or torchmetrics'
    `BinaryPrecisionRecallCurve(...).compute()` (whose final, threshold-less point is dropped).
    Fit on validation data with defects, then apply the threshold to test.
    """
    n = len(thresholds)
    p, r = precision[:n].double(), recall[:n].double()
    f1 = torch.where(p + r > 0, 2 * p * r / (p + r), torch.zeros_like(p))
    best = int(torch.argmax(f1))
    return float(thresholds[best]), float(f1[best])
