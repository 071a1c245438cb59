"""defect: the reference table (pixel recall / precision / accuracy by threshold and defect type), the
standard metrics per type, the thresholds used and where they came from, PR curves and examples."""

from __future__ import annotations

import math

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Details, Section, Table
from visionlab.report.sections.common import figure, split_prefix

STANDARD = (
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AU-PRO"),
    ("pixel_ap", "pixel AP"),
    ("image_ap", "image AP"),
)
REFERENCE_SCORES = ("recall", "precision", "accuracy")


def reference_table(run: Run, p: str) -> dict[str, dict[float, dict[str, float]]]:
    """{type: {threshold: {score: value}}} from the `<split>/ref/<type>/<threshold>/<score>` metrics."""
    table: dict[str, dict[float, dict[str, float]]] = {}
    for key, v in run.metrics.items():
        parts = key.split("/")
        if len(parts) == 5 and parts[0] == p and parts[1] == "ref":
            table.setdefault(parts[2], {}).setdefault(float(parts[3]), {})[parts[4]] = v
    return table


def build(run: Run) -> list[Section]:
    p = split_prefix(run)
    ref = reference_table(run, p)
    ref_rows: list[list[Cell]] = [
        [name, f"{threshold:g}", *(scores.get(s) for s in REFERENCE_SCORES)]
        for name, by_threshold in ref.items()
        for threshold, scores in sorted(by_threshold.items())
    ]
    types = [t for t in ref if t != "good"] or sorted(
        {k.split("/")[1] for k in run.metrics if k.count("/") == 2 and k.endswith("/image_auroc")}
    )
    groups = [("all", f"{p}/"), *((t, f"{p}/{t}/") for t in types)]
    standard = Table(
        ["group", *(label for _, label in STANDARD)],
        [[name, *(run.metrics.get(f"{prefix}{k}") for k, _ in STANDARD)] for name, prefix in groups],
        caption="per type: the good images plus that type's; image score from the smoothed error map",
    )
    at_rows = [
        [
            name,
            *(
                run.metrics.get(f"{prefix}{level}_{s}")
                for level in ("pixel", "image")
                for s in ("precision", "recall", "f1")
            ),
        ]
        for name, prefix in groups
    ]
    at = Table(["group", "pixel P", "pixel R", "pixel F1", "image P", "image R", "image F1"], at_rows,
               caption="precision / recall / F1 at the thresholds below")  # fmt: skip
    sections = [
        Section("Reference table").add(
            Table(
                ["defect type", "threshold", *REFERENCE_SCORES],
                ref_rows,
                caption="a pixel is predicted defective when |x − x̂| ≥ threshold; per type: that type's images only",
            )
            if ref_rows
            else None
        ),
        Section("Image and pixel AUROC, AU-PRO").add(standard),
        Section("Thresholds").add(thresholds_table(run, p), at),
    ]
    shown = [
        f
        for name in [*(t for t in ref or types if t != "good"), "good"]
        if (f := figure(run, f"examples: {name}", f"examples_{name}.png", f"test/examples/{name}"))
    ]
    examples = Section("Example predictions").add(
        figure(run, "pixel PR curves by defect type", "pixel_pr_curve.png", "test/pixel_pr_curves_by_type"),
        *shown[:2],
        Details(f"the other {len(shown) - 2} types' examples", list(shown[2:])) if len(shown) > 2 else None,
    )
    return [*sections, examples]


def thresholds_table(run: Run, p: str) -> Table:
    """The fitted pixel / image thresholds, their source, and the metric settings behind the tables."""
    settings = dict(run.tables.get("settings") or run.config.get("metrics") or {})
    source = run.tables.get("threshold_source")
    if source is None:
        flag = run.metrics.get(f"{p}/threshold_from_val_defects", float("nan"))
        source = (
            "F1-optimal on validation defects"
            if flag == 1.0
            else "quantile of validation good scores"
            if flag == 0.0
            else "not recorded"
        )
    rows: list[list[Cell]] = [
        ["pixel threshold", run.metrics.get(f"{p}/pixel_threshold"), source],
        ["image threshold", run.metrics.get(f"{p}/image_threshold"), source],
        ["reference thresholds", ", ".join(f"{t:g}" for t in settings.get("thresholds", [])), "metrics.thresholds"],
        ["image score", f"{settings.get('image_score', '')} of the map smoothed with sigma {settings.get('smooth_sigma', '')}",
         "metrics.image_score, metrics.smooth_sigma"],
        ["AU-PRO up to FPR", settings.get("fpr_limit"), "metrics.fpr_limit"],
    ]  # fmt: skip
    if settings.get("fallback_quantile") is not None:
        rows.append(
            [
                "fallback quantile",
                settings["fallback_quantile"],
                "metrics.fallback_quantile (validation without defects)",
            ]
        )
    return Table(["threshold / setting", "value", "where it came from"], [r for r in rows if _shown(r[1])])


def _shown(value: Cell) -> bool:
    return value not in (None, "") and not (isinstance(value, float) and math.isnan(value))
