"""embed: digit accuracy per class, the SSD table of the symbols in the embedding, leave-one-out
1-NN / k-NN and the new symbols' nearest classes, and the first-layer filters."""

from __future__ import annotations

from typing import Any

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Details, Section, Table, Text
from visionlab.report.sections.common import confusion_table, figure, names_under, split_prefix


def build(run: Run) -> list[Section]:
    p = split_prefix(run)
    names = list(run.tables.get("class_names") or names_under(run, f"{p}/acc_class/"))
    rows: list[list[Cell]] = [[name, run.metrics.get(f"{p}/acc_class/{name}")] for name in names]
    rows.append(["all (micro)", run.metrics.get(f"{p}/acc")])
    digits = Section("Digit accuracy").add(
        Table(["class", "accuracy"], rows),
        figure(run, "confusion matrix (rows: true class)", "confusion_matrix.png", "test/confusion_matrix"),
        confusion_table(names, run.tables.get("confusion"), "test digits"),
    )
    symbols = run.tables.get("symbols") or {}
    sections = [digits, *symbol_sections(run, p, symbols)]
    sections.append(
        Section("First-layer filters").add(
            figure(run, "conv1 filters (blue < 0 < red)", "filters_conv1.png", "filters/conv1"),
            figure(run, "the filters' responses to one digit", "filters/responses"),
        )
    )
    examples = Section("Example predictions").add(
        figure(run, "new symbols: nearest class in the embedding", "symbols_test.png"),
        figure(run, "symbols, leave-one-out", "symbols_train_loo.png"),
    )
    if examples.blocks:
        sections.append(examples)
    return sections


def symbol_sections(run: Run, p: str, symbols: dict[str, Any]) -> list[Section]:
    """The nearest-neighbour results, the SSD table and the new images (when symbols were evaluated)."""
    k = int(symbols.get("k") or run.metrics.get(f"{p}/symbols/k") or 3)
    results = [
        ["leave-one-out 1-NN accuracy (train symbols)", run.metrics.get(f"{p}/symbols/loo_1nn_acc")],
        [f"leave-one-out {k}-NN accuracy (train symbols)", run.metrics.get(f"{p}/symbols/loo_knn_acc")],
        ["new symbols: 1-NN accuracy", run.metrics.get(f"{p}/symbols/new_1nn_acc")],
        [f"new symbols: {k}-NN accuracy", run.metrics.get(f"{p}/symbols/new_knn_acc")],
    ]
    results = [r for r in results if r[1] is not None]
    if not results:
        return [Section("Symbols").add(Text("no symbol evaluation in this run (symbols.train=null)"))]
    section = Section("1-NN / k-NN and new symbols").add(
        Table(
            ["measure", "value"],
            results,
            caption="distances: sums of squared differences (SSD) in the embedding",
        )
    )
    ssd = symbols.get("ssd_table") or {}
    refs = list(ssd.get("columns") or [])
    ssd_section = Section("SSD table")
    if ssd.get("rows"):
        ssd_rows = [
            [r["image"], r["class"], *(_ssd(r["ssd"].get(c)) for c in refs), r["loo_1nn"], r["loo_knn"]]
            for r in ssd["rows"]
        ]
        ssd_section.add(
            Table(
                ["image", "class", *(f"SSD to {c}" for c in refs), "1-NN (LOO)", f"{k}-NN (LOO)"],
                ssd_rows,
                caption="each train symbol against the first image of each class",
            )
        )
    ssd_section.add(figure(run, "SSD table", "ssd_table.png", "test/symbols_ssd_table"))
    new = symbols.get("new_images") or []
    if new:
        new_rows = [
            [
                r["image"],
                r["class"],
                r["nearest_image"],
                r["nearest_class"],
                _ssd(r["nearest_ssd"]),
                r["1nn"],
                r["knn"],
            ]
            for r in new
        ]
        table = Table(
            ["image", "class", "nearest image", "nearest class", "SSD", "1-NN", f"{k}-NN"], new_rows
        )
        section.add(Details(f"the {len(new)} new symbols and their nearest train symbol", [table]))
    return [section, ssd_section] if ssd_section.blocks else [section]


def _ssd(value: float | None) -> str:
    """An SSD with two decimals (they span 0 to a few hundred: one format keeps the column aligned)."""
    return "" if value is None else f"{value:.2f}"
