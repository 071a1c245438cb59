"""Segment results: the logged IoU scalars, the text report (one model, or two side by side), its
tables and the confusion matrices evaluate.py writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tasks.metrics.segmentation import format_iou_report
from visionlab.figures import confusion_figure, save_figure


def write_confusion(
    out_dir: Path, test_scores: dict[str, dict[str, torch.Tensor]], class_names: list[str]
) -> None:
    """confusion_matrix.png (+ .csv) and, with compare_ckpt, compare_confusion_matrix.png (+ .csv)."""
    for key, prefix, title in (("main", "", "ckpt_path"), ("compare", "compare_", "compare_ckpt")):
        if key not in test_scores:
            continue
        matrix = test_scores[key]["confusion_matrix"].cpu().numpy()
        save_figure(
            confusion_figure(matrix, class_names, f"{title}: pixels, % of true class", percent=True),
            out_dir / f"{prefix}confusion_matrix.png",
        )
        header = "true\\predicted," + ",".join(class_names)
        rows = [
            f"{name}," + ",".join(str(int(v)) for v in row)
            for name, row in zip(class_names, matrix, strict=True)
        ]
        (out_dir / f"{prefix}confusion_matrix.csv").write_text("\n".join([header, *rows]) + "\n")


def report_tables(
    test_scores: dict[str, dict[str, torch.Tensor]], class_names: list[str], ckpt_names: Sequence[str]
) -> dict[str, Any]:
    """Class names and the test confusion matrix of pixel counts (with compare_ckpt, also its own)."""
    out: dict[str, Any] = {"class_names": class_names}
    for key, scores in test_scores.items():
        out["confusion" if key == "main" else f"{key}_confusion"] = (
            scores["confusion_matrix"].cpu().long().tolist()
        )
    if "compare" in test_scores:
        out["checkpoints"] = list(ckpt_names)
    return out


def format_report(
    test_scores: dict[str, dict[str, torch.Tensor]], class_names: list[str], ckpt_names: Sequence[str]
) -> str:
    """The reference's `class #k (name): value` + `mean_iou` lines; with a "compare" entry, both models
    side by side per class (`ckpt_names`: A's and B's checkpoints)."""
    main = test_scores["main"]
    lines = [
        iou_report(main["iou"].tolist(), class_names, main["miou"].item()),
        f"pixel_accuracy: {main['pixel_accuracy'].item():.4f}",
    ]
    if "compare" not in test_scores:
        return "\n".join(lines)
    other = test_scores["compare"]
    labels = [f"class #{k} ({n})" for k, n in enumerate(class_names)]
    width = max(len(s) for s in [*labels, "pixel_accuracy"]) + 1
    lines += [
        "",
        "side by side: A = ckpt_path, B = compare_ckpt",
        f"  A: {ckpt_names[0]}",
        f"  B: {ckpt_names[1]}",
        f"{'':<{width}}  {'A':>7}  {'B':>7}  {'B - A':>7}",
    ]
    rows = list(zip(labels, main["iou"].tolist(), other["iou"].tolist(), strict=True))
    rows += [("mean_iou", main["miou"].item(), other["miou"].item())]
    rows += [("pixel_accuracy", main["pixel_accuracy"].item(), other["pixel_accuracy"].item())]
    for label, a, b in rows:
        lines.append(f"{label + ':':<{width}}  {_fmt(a)}  {_fmt(b)}  {_fmt(b - a, signed=True)}")
    return "\n".join(lines)


def iou_report(iou: list[float], class_names: list[str], miou: float) -> str:
    """`format_iou_report`'s lines, with `n/a` for classes whose IoU is undefined (absent)."""
    lines = format_iou_report(iou, class_names, miou).splitlines()
    for k, value in enumerate(iou):
        if value != value:
            lines[k] = f"class #{k} ({class_names[k]}): n/a (absent from ground truth and predictions)"
    return "\n".join(lines)


def _fmt(value: float, signed: bool = False) -> str:
    if value != value:  # NaN: class absent
        return f"{'n/a':>7}"
    return f"{value:+7.4f}" if signed else f"{value:7.4f}"


def scalar_scores(scores: dict[str, torch.Tensor], class_names: list[str], prefix: str) -> dict[str, float]:
    """`<prefix>/miou`, `<prefix>/pixel_acc` and `<prefix>/iou/<class>` as floats; classes absent from
    both ground truth and predictions (IoU undefined) are left out rather than logged as NaN."""
    out = {f"{prefix}/miou": scores["miou"].item(), f"{prefix}/pixel_acc": scores["pixel_accuracy"].item()}
    for name, value in zip(class_names, scores["iou"].tolist(), strict=True):
        if value == value:
            out[f"{prefix}/iou/{name}"] = value
    return out
