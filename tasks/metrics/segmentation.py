"""Semantic segmentation scores from one accumulated confusion matrix: per-class IoU, mIoU, pixel accuracy.

Pixels whose target is `ignore_index` (VOC's void, 255) are dropped before counting, together with
whatever was predicted there. A class is *present* when it occurs in the (non-ignored) target or
prediction; a class absent from both has no defined IoU: it is NaN in `iou` and left out of `miou`
(torchmetrics' MulticlassJaccardIndex would report 0 and pull the mean down instead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class SegmentationScores(Metric):
    """Confusion matrix over `num_classes` (rows = target, columns = prediction), reduced by sum across ranks.

    `update(preds, target)` takes logits (N, C, H, W) or labels (N, H, W) and targets (N, H, W).
    `validate_args=False` skips the label range check (which reads values back from the device).
    `compute()` returns a dict: `iou` (C,) float with NaN for absent classes, `miou`, `pixel_accuracy`
    and `confusion_matrix` (C, C) int64.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        validate_args: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.validate_args = validate_args
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else [f"class_{k}" for k in range(num_classes)]
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.int64), dist_reduce_fx="sum"
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `preds` are logits (N, C, H, W) or labels (N, H, W); `target` labels (N, H, W).

        With `validate_args=False` the label range checks are skipped and nothing waits for the
        device: void pixels are counted into a spare bin that is dropped, instead of being filtered out.
        """
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(preds.shape)} does not match target {tuple(target.shape)}"
            )
        keep = target != self.ignore_index
        if self.validate_args:
            for name, labels in (("target", target[keep]), ("prediction", preds[keep])):
                if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                    raise ValueError(
                        f"{name} labels must be 0..{self.num_classes - 1} or {self.ignore_index} "
                        f"(ignored), found values in {labels.min().item()}..{labels.max().item()}"
                    )
        bins = self.num_classes**2
        index = torch.where(keep, target.long() * self.num_classes + preds.long(), bins).flatten()
        counts = torch.zeros(bins + 1, dtype=torch.int64, device=index.device)
        counts.index_add_(0, index, torch.ones_like(index))
        self.confmat += counts[:bins].reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-class IoU (NaN where absent), mIoU over present classes, pixel accuracy, confusion matrix."""
        confmat = self.confmat.double()
        tp = confmat.diagonal()
        union = confmat.sum(0) + confmat.sum(1) - tp  # zero exactly when the class is absent from both
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        total = confmat.sum()
        accuracy = tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64)
        return {
            "iou": iou.float(),
            "miou": iou.nanmean().float(),
            "pixel_accuracy": accuracy.float(),
            "confusion_matrix": self.confmat.clone(),
        }

    def named_scores(self, scores: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Flat {name: float} for logging and metrics.json: `miou`, `pixel_accuracy`, `iou/<class name>`."""
        scores = self.compute() if scores is None else scores
        named = {"miou": scores["miou"].item(), "pixel_accuracy": scores["pixel_accuracy"].item()}
        named.update({f"iou/{n}": v for n, v in zip(self.class_names, scores["iou"].tolist(), strict=True)})
        return named


def format_iou_report(iou: Sequence[float], class_names: Sequence[str], miou: float) -> str:
    """The reference's text table: one `class #k (name): value` line per class, then `mean_iou: value`."""
    lines = [
        f"class #{k} ({name}): {value:.4f}"
        for k, (name, value) in enumerate(zip(class_names, iou, strict=True))
    ]
    return "\n".join([*lines, f"mean_iou: {miou:.4f}"])
