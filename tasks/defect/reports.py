"""Defect reports: the metric and reference tables (Markdown for TensorBoard, text for evaluate.py)
and the flat test scalars of metrics.json."""

from __future__ import annotations

import math
from typing import Any

from tasks.metrics.defect import STANDARD


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


def test_scalars(results: dict[str, Any], out: dict[str, float]) -> dict[str, float]:
    """`out` (loss and thresholds) extended by every group's metrics, the counts-based P/R/F1 at the
    fitted thresholds and the reference table, flat for metrics.json."""
    for group, values in results["groups"].items():
        prefix = "test" if group == "all" else f"test/{group}"
        out.update({f"{prefix}/{k}": v for k, v in values.items()})
    for level, by_group in results["at_threshold"].items():
        for group, values in by_group.items():
            prefix = "test" if group == "all" else f"test/{group}"
            out.update({f"{prefix}/{level}_{k}": v for k, v in values.items()})
    for name, by_threshold in results["table"].items():
        for threshold, scores in by_threshold.items():
            out.update({f"test/ref/{name}/{threshold:g}/{k}": v for k, v in scores.items()})
    return out


def threshold_source(from_defects: float, fallback_quantile: float) -> str:
    """How the thresholds were fitted: `from_defects` is 1 (F1-optimal), 0 (quantile) or NaN (not fitted)."""
    if from_defects == 1.0:
        return "F1-optimal on validation defects"
    if from_defects == 0.0:
        return f"{fallback_quantile:g} quantile of validation good scores"
    return "not fitted (no validation epoch ran)"


def format_report(
    results: dict[str, Any], settings: dict[str, Any], source: str, thresholds: tuple[float, float]
) -> str:
    """The reference's table (per type x threshold: recall, precision, accuracy), then the standard
    metrics per type, then precision / recall / F1 at the (pixel, image) `thresholds` fitted on
    validation as `source` says."""
    pixel_threshold, image_threshold = thresholds
    lines = [
        "Reference pixel scores: a pixel is predicted defective when |x - x_hat| >= threshold.",
        "  recall = |fault ∩ pred| / |fault|  precision = |fault ∩ pred| / |pred|  "
        "accuracy = pixels where pred = truth / all pixels  (per type: that type's images only)",
        "",
        f"{'type':<12} {'threshold':>9} {'recall':>8} {'precision':>9} {'accuracy':>8}",
    ]
    for name, by_threshold in results["table"].items():
        for threshold, s in by_threshold.items():
            lines.append(
                f"{name:<12} {threshold:>9g} {_fmt(s['recall']):>8} {_fmt(s['precision']):>9} {_fmt(s['accuracy']):>8}"
            )
    lines += [
        "",
        f"Standard metrics (per type: good images + that type; AU-PRO up to FPR {settings['fpr_limit']:g}; "
        f"image score = {settings['image_score']} of the map smoothed with sigma "
        f"{settings['smooth_sigma']:g})",
        "",
        f"{'group':<12} " + " ".join(f"{k:>11}" for k in STANDARD),
    ]
    for name, values in results["groups"].items():
        lines.append(f"{name:<12} " + " ".join(f"{_fmt(values[k]):>11}" for k in STANDARD))
    at = results.get("at_threshold") or {}
    if at:
        lines += [
            "",
            f"At the thresholds fitted on validation ({source}): pixel >= {pixel_threshold:.4f}, "
            f"image score >= {image_threshold:.4f}",
            "",
            f"{'group':<12} {'pixel P':>8} {'pixel R':>8} {'pixel F1':>8} {'image P':>8} {'image R':>8} {'image F1':>8}",
        ]
        for name in results["groups"]:
            cells = []
            for level in ("pixel", "image"):
                values = at.get(level, {}).get(name, {})
                cells += [_fmt(values.get(k, float("nan"))) for k in ("precision", "recall", "f1")]
            lines.append(f"{name:<12} " + " ".join(f"{c:>8}" for c in cells))
    return "\n".join(lines)
