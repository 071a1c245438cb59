"""finetune: accuracy and ROC-AUC per class, the ROC curves, the confusion matrix and a grid of
validation predictions."""

from __future__ import annotations

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Section, Table
from visionlab.report.sections.common import confusion_table, figure, names_under, split_prefix


def build(run: Run) -> list[Section]:
    p = split_prefix(run)
    names = list(run.tables.get("class_names") or names_under(run, f"{p}/acc_class/"))
    aucs = list(run.tables.get("roc_auc") or [None] * len(names))
    rows: list[list[Cell]] = [
        [name, run.metrics.get(f"{p}/acc_class/{name}"), auc] for name, auc in zip(names, aucs, strict=False)
    ]
    rows.append(
        ["all (accuracy micro, ROC-AUC macro)", run.metrics.get(f"{p}/acc"), run.metrics.get(f"{p}/auroc")]
    )
    per_class = Table(["class", "accuracy", "ROC-AUC (one vs rest)"], rows)
    curves = Section("ROC and confusion matrix").add(
        figure(run, "ROC, one class vs rest", "roc.png", "test/roc"),
        figure(run, "confusion matrix (rows: true class)", "confusion_matrix.png", "test/confusion_matrix"),
        confusion_table(names, run.tables.get("confusion"), "test images"),
    )
    examples = Section("Example predictions").add(
        figure(run, "test images: true -> predicted (red: wrong)", "predictions.png", "test/predictions")
        or figure(run, "validation images, last epoch: true -> predicted (red: wrong)", "val/predictions")
    )
    return [Section("Accuracy per class").add(per_class), curves, examples]
