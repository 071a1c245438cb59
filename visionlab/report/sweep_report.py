"""The report of a multirun folder: summary.csv as a sortable table, the per-parameter plots, the best
job (linked to its own report) and the failed jobs with their error line."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from visionlab.report.collect import load_yaml
from visionlab.report.doc import Cell, Figure, Link, Report, Table, Text
from visionlab.report.run_report import HTML, duration, shown_path
from visionlab.sweep import _optimized_metric, _sort_key, collect_jobs, write_summary


def sweep_setup(sweep_dir: Path) -> tuple[str, str | None, str]:
    """(task, optimized metric, "max"/"min") from the jobs' configs (an Optuna sweep's direction wins)."""
    task, mode = "unknown", "max"
    for cfg_path in sorted(sweep_dir.glob("*/config.yaml"), key=lambda p: p.parent.name):
        config = load_yaml(cfg_path) or {}
        task = str(config.get("task_name") or task)
        mode = str((config.get("monitor") or {}).get("mode") or mode)
        break
    direction = (
        ((load_yaml(sweep_dir / "multirun.yaml") or {}).get("hydra") or {})
        .get("sweeper", {})
        .get("direction")
    )
    if direction in ("maximize", "minimize"):
        mode = "max" if direction == "maximize" else "min"
    return task, _optimized_metric(sweep_dir), mode


def read_summary_csv(sweep_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (sweep_dir / "summary.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def build_sweep_report(sweep_dir: Path, out_dir: Path) -> Report:
    """The sweep page, written in `out_dir` (links to the jobs' reports are relative to it)."""
    task, metric, mode = sweep_setup(sweep_dir)
    if not (sweep_dir / "summary.csv").is_file():
        write_summary(sweep_dir, metric)  # an interrupted or cluster-run sweep: rebuild it first
    jobs = {str(r["job"]): r for r in collect_jobs(sweep_dir)}
    columns, rows = read_summary_csv(sweep_dir)
    done = [r for r in jobs.values() if r["status"] == "completed" and metric and metric in r["metrics"]]
    pick = max if mode == "max" else min
    best = pick(done, key=lambda r: float(r["metrics"][metric])) if done else None
    failed = [r for r in jobs.values() if r["status"] != "completed"]
    params = sorted({p for r in jobs.values() for p in r["params"]})
    swept = [p for p in params if len({r["params"].get(p) for r in jobs.values()}) > 1]
    fixed = [f"{p}={next(iter(jobs.values()))['params'].get(p)}" for p in params if p not in swept]
    report = Report(
        title=f"{task}: sweep of {len(jobs)} jobs",
        subtitle=shown_path(sweep_dir),
        facts=[
            ("task", task),
            ("jobs", len(jobs)),
            ("completed", len(jobs) - len(failed)),
            ("not completed", len(failed)),
        ],
    )
    if metric:
        report.facts.append((f"best {metric} ({mode})", best["metrics"][metric] if best else "n/a"))
    report.section(
        "Swept parameters",
        Table(["parameter", "values"], _param_values(jobs, swept)),
        Text("the same in every job: " + " ".join(fixed)) if fixed else None,
    )
    if best is not None:
        link = _job_link(sweep_dir, str(best["job"]), out_dir)
        rows_best: list[list[Cell]] = [["job", link], [metric or "", best["metrics"][metric]]]
        rows_best += [[p, best["params"].get(p, "")] for p in swept]
        if best.get("wall_s") is not None:
            rows_best.append(["wall time", duration(float(best["wall_s"]))])
        report.section("Best job", Table(["", ""], rows_best))
    else:
        report.section("Best job", Text(f"no completed job has {metric or 'an optimized_metric'}"))
    order = _column_order(
        [c for c in columns if c not in fixed_keys(params, swept) and c != "error"], swept, metric
    )
    table_rows: list[list[Cell]] = []
    classes: list[str] = []
    for row in rows:
        job = row.get("job", "")
        cells: list[Cell] = [_job_link(sweep_dir, job, out_dir)]
        cells += [_number_or_text(row.get(c, ""), c in swept) for c in order[1:]]
        table_rows.append(cells)
        status = row.get("status")
        classes.append(
            "best"
            if best is not None and job == str(best["job"])
            else "failed"
            if status == "failed"
            else "missing"
            if status != "completed"
            else ""
        )
    report.section(
        "Summary",
        Table(
            order,
            table_rows,
            caption="summary.csv, one row per job: click a column header to sort; errors are under Failed jobs",
            sortable=True,
            row_classes=classes,
        ),
    )
    plots = [
        Figure(f"{metric} against {p.name[5:-4]}", p.read_bytes())
        for p in sorted(sweep_dir.glob("plot_*.png"))
    ]
    report.section(
        "Per-parameter plots", *plots or [Text("no plots (no swept parameter, or no completed job)")]
    )
    failed_rows = [[_job_link(sweep_dir, str(r["job"]), out_dir), r["status"], " ".join(f"{k}={r['params'][k]}" for k in swept if k in r["params"]), r["error"]] for r in failed]  # fmt: skip
    report.section(
        "Failed jobs",
        Table(["job", "status", "swept values", "error"], failed_rows)
        if failed_rows
        else Text("none: every job completed"),
    )
    return report


def fixed_keys(params: list[str], swept: list[str]) -> set[str]:
    """The overrides every job shares (columns of summary.csv that say nothing about one job)."""
    return set(params) - set(swept)


def _param_values(jobs: dict[str, dict[str, Any]], params: list[str]) -> list[list[Cell]]:
    return [
        [p, ", ".join(sorted({str(r["params"].get(p, "")) for r in jobs.values()}, key=_sort_key))]
        for p in params
    ]


def _column_order(columns: list[str], params: list[str], metric: str | None) -> list[str]:
    """job, status, the parameters, the optimized metric, then the rest of summary.csv's columns."""
    first = ["job", "status", *params, *([metric] if metric in columns else [])]
    return [*first, *(c for c in columns if c not in first)]


def _number_or_text(text: str, is_param: bool) -> Cell:
    if is_param:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _job_link(sweep_dir: Path, job: str, out_dir: Path) -> Cell:
    page = sweep_dir / job / HTML
    return Link(job, os.path.relpath(page, out_dir)) if page.is_file() else job
