"""segment: IoU per class (and against compare_ckpt when evaluated with one), the confusion matrix of
pixels, and overlays of ground truth and predictions."""

from __future__ import annotations

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Section, Table
from visionlab.report.sections.common import confusion_table, figure, names_under, split_prefix


def build(run: Run) -> list[Section]:
    p = split_prefix(run)
    names = list(run.tables.get("class_names") or names_under(run, f"{p}/iou/"))
    compare = any(k.startswith("compare/") for k in run.metrics)
    heads = ["IoU", "IoU (compare_ckpt)", "difference"] if compare else ["IoU"]

    def row(label: str, mine: str, other: str) -> list[Cell]:
        a = run.metrics.get(mine)
        if not compare:
            return [label, a]
        b = run.metrics.get(other)
        return [label, a, b, b - a if a is not None and b is not None else None]

    indexed = bool(run.tables.get("class_names"))  # else the names come from metric keys, in their order
    rows = [
        row(f"#{k} {name}" if indexed else name, f"{p}/iou/{name}", f"compare/iou/{name}")
        for k, name in enumerate(names)
    ]
    rows += [
        row("mean IoU", f"{p}/miou", "compare/miou"),
        row("pixel accuracy", f"{p}/pixel_acc", "compare/pixel_acc"),
    ]
    iou = Table(
        ["class", *heads],
        rows,
        caption="n/a: the class is absent from both the ground truth and the predictions",
    )
    confusion = Section("Confusion matrix").add(
        figure(run, "pixels, % of the true class", "confusion_matrix.png", "test/confusion_matrix"),
        figure(run, "compare_ckpt: pixels, % of the true class", "compare_confusion_matrix.png"),
        confusion_table(names, run.tables.get("confusion"), "pixel counts"),
    )
    examples = Section("Example predictions").add(
        figure(run, "image, ground truth and prediction", "overlays.png", "test/overlays", "val/overlays")
    )
    return [Section("IoU per class").add(iou), confusion, examples]
