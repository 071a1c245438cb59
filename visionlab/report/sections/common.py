"""Helpers the task sections share: which split a run's metrics are of, figures from the run's files,
and the confusion-matrix table."""

from __future__ import annotations

from typing import Any

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Details, Figure, Table


def split_prefix(run: Run) -> str:
    """`test`, or `val` for an evaluate.py run on split=val (its metrics are val/*)."""
    return "test" if any(k.startswith("test/") for k in run.metrics) else "val"


def value(run: Run, key: str) -> float | None:
    return run.metrics.get(key)


def figure(run: Run, title: str, *sources: str) -> Figure | None:
    """A figure from the first of `sources` the run has (PNG file names or TensorBoard tags)."""
    data = run.image(*sources)
    return Figure(title, data) if data else None


def names_under(run: Run, prefix: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """The last key parts under `prefix` (e.g. the class names of test/iou/<name>), in key order."""
    out = [k[len(prefix) :] for k in run.metrics if k.startswith(prefix) and "/" not in k[len(prefix) :]]
    return [n for n in out if n not in exclude]


def confusion_table(names: list[str], matrix: list[list[Any]] | None, caption: str) -> Details | None:
    """The confusion matrix (rows = true class, columns = predicted) as a folded table of counts."""
    if not matrix or len(matrix) != len(names):
        return None
    rows: list[list[Cell]] = [[name, *(int(v) for v in row)] for name, row in zip(names, matrix, strict=True)]
    table = Table(["true \\ predicted", *names], rows, caption=caption)
    return Details("confusion matrix as numbers (rows: true class, columns: predicted)", [table])
