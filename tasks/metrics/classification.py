"""Classification metrics for `finetune`: one MetricCollection computed once per epoch."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassROC,
)

#: exact ROC (scores kept: N x C floats, small for classification); torchmetrics' binned mode is
#: a slow per-element loop under `deterministic=True`
ROC_THRESHOLDS = None


def classification_metrics(num_classes: int) -> MetricCollection:
    """acc (micro: correct / all images), per-class accuracy (recall of each class), macro one-vs-rest
    ROC-AUC, confusion matrix (rows = true class) and per-class ROC curves."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "acc_per_class": MulticlassAccuracy(num_classes, average="none"),
            "auroc": MulticlassAUROC(num_classes, average="macro", thresholds=ROC_THRESHOLDS),
            "confusion": MulticlassConfusionMatrix(num_classes),
            "roc": MulticlassROC(num_classes, thresholds=ROC_THRESHOLDS),
        },
        compute_groups=False,
    )


def scalar_results(results: dict[str, torch.Tensor], class_names: list[str], prefix: str) -> dict[str, float]:
    """Flatten computed metrics into `prefix/acc`, `prefix/auroc`, `prefix/acc_class/<name>` floats."""
    out = {f"{prefix}/acc": float(results["acc"]), f"{prefix}/auroc": float(results["auroc"])}
    for name, value in zip(class_names, results["acc_per_class"].tolist(), strict=True):
        out[f"{prefix}/acc_class/{name}"] = float(value)
    return out
