"""Runs of one task side by side: one column per run (named by what differs between them), every metric
with its difference to the first run, training time, and the curves overlaid."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visionlab.errors import ConfigError
from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Details, Figure, Link, Report, Table, Text, signed
from visionlab.report.plots import Lines, curves_png
from visionlab.report.run_report import HTML, duration
from visionlab.report.settings import PLACE, flatten, show


def check_one_task(runs: list[Run]) -> str:
    """The runs' task; runs of different tasks are a ConfigError naming each folder's task."""
    tasks = {run.task for run in runs}
    if len(tasks) > 1:
        listed = ", ".join(f"{run.name}: {run.task}" for run in runs)
        raise ConfigError(f"the runs are of different tasks ({listed}); compare runs of one task")
    return tasks.pop()


def differing_settings(runs: list[Run]) -> dict[str, list[Any]]:
    """setting -> each run's value, for the settings whose values differ (run paths left out)."""
    flat = [flatten(run.config) for run in runs]
    out: dict[str, list[Any]] = {}
    for key in sorted(set().union(*flat)):
        values = [f.get(key, "(not set)") for f in flat]
        if len({show(v) for v in values}) < 2:
            continue
        if any(_names_run(v, run) for v, run in zip(values, runs, strict=True)) or PLACE in values:
            continue
        out[key] = values
    return out


def _names_run(value: Any, run: Run) -> bool:
    return isinstance(value, str) and (str(run.folder) in value or run.name in value)


def run_labels(runs: list[Run]) -> list[str]:
    """A column name per run: the command-line overrides not shared by every run (`model=alexnet`);
    where those do not name every run apart, the settings that differ (`optimizer.lr=0.02`); a run
    with nothing of its own is named by its folder, and so is every label that would still be shared."""
    common = set.intersection(*(set(run.overrides) for run in runs))
    labels = [" ".join(o for o in run.overrides if o not in common) for run in runs]
    if len(set(labels)) < len(labels) or not all(labels):
        differing = differing_settings(runs)
        keys = list(differing)[:3]
        by_settings = [" ".join(f"{k}={show(differing[k][i])}" for k in keys) for i in range(len(runs))]
        if (all(by_settings) and len(set(by_settings)) == len(runs)) or len(set(labels)) < len(labels):
            labels = by_settings
    labels = [label or run.name for label, run in zip(labels, runs, strict=True)]
    if len(set(labels)) < len(labels):
        labels = [
            label if label == run.name else f"{label} ({run.name})"
            for label, run in zip(labels, runs, strict=True)
        ]
    return labels


def metrics_rows(runs: list[Run], keys: list[str]) -> list[list[Cell]]:
    """Per metric: each run's value, and after the second run on, its difference to the first."""
    rows: list[list[Cell]] = []
    for key in keys:
        first = runs[0].metrics.get(key)
        row: list[Cell] = [key, first]
        for run in runs[1:]:
            value = run.metrics.get(key)
            row += [value, signed(value - first) if value is not None and first is not None else None]
        rows.append(row)
    return rows


def build_comparison(runs: list[Run], out_dir: Path) -> Report:
    """The comparison page, written in `out_dir` (its links to the runs' reports are relative)."""
    task = check_one_task(runs)
    labels = run_labels(runs)
    report = Report(
        title=f"{task}: {len(runs)} runs compared",
        subtitle=" vs ".join(labels),
        facts=[("task", task), ("runs", len(runs))],
    )
    columns = ["", *labels]
    overview: list[list[Cell]] = [
        ["run folder", *(_report_link(run, out_dir) for run in runs)],
        ["entry point", *(f"{run.kind}.py" for run in runs)],
        ["command", *(run.command for run in runs)],
        ["training time", *(duration(run.train_seconds) if run.train_seconds is not None else "" for run in runs)],
        ["finished", *(run.info.get("finished", "") for run in runs)],
        ["device", *(str((run.info.get("machine") or {}).get("gpu") or (run.info.get("machine") or {}).get("device") or "") for run in runs)],
    ]  # fmt: skip
    report.section("Runs", Table(columns, overview))
    differing = differing_settings(runs)
    report.section(
        "Settings that differ between the runs",
        Table(["setting", *labels], [[k, *(show(v) for v in values)] for k, values in differing.items()])
        if differing
        else Text("none: the runs have the same resolved settings"),
    )
    metric_columns = ["metric", labels[0]]
    for label in labels[1:]:
        metric_columns += [label, f"difference ({label} − {labels[0]})" if len(runs) > 2 else "difference"]
    headline = list(dict.fromkeys(k for run in runs for k in run.headline()))
    every = sorted({k for run in runs for k in run.metrics} - set(headline))
    report.section(
        "Metrics",
        Table(
            metric_columns,
            metrics_rows(runs, [*headline, "time/train_s"] if runs[0].train_seconds else headline),
        ),
        Details(
            f"every other metric ({len(every)})",
            [Table(metric_columns, metrics_rows(runs, every), sortable=True)],
        ),
    )
    curves = curves_png(overlay_panels(runs, labels))
    report.section("Curves overlaid", Figure("per epoch, one line per run", curves) if curves else None)
    return report


def overlay_panels(runs: list[Run], labels: list[str]) -> list[tuple[str, Lines]]:
    """Training loss, validation loss and the monitored metric, one line per run in each."""
    monitor = runs[0].monitor
    panels: list[tuple[str, Lines]] = []
    for tag in dict.fromkeys(("train/loss", "val/loss", monitor)):
        panels.append((tag, [(label, run.curve(tag)) for run, label in zip(runs, labels, strict=True)]))
    return panels


def _report_link(run: Run, out_dir: Path) -> Cell:
    if (run.folder / HTML).is_file():
        return Link(run.name, os.path.relpath(run.folder / HTML, out_dir))
    return str(run.folder)
