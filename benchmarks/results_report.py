"""The files `benchmarks.results` writes: results.md (summary, bars with their reference numbers,
jobs, machine) and the machine, versions and git state that results.json records."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_model, package_versions
from benchmarks.results_spec import TaskResult, key_label

#: the libraries whose versions results.json records
VERSIONED = ("torch", "torchvision", "lightning", "hydra-core", "torchmetrics")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, accelerator, memory, OS."""
    cpu = cpu_model()
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    try:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
        info["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    except Exception as err:  # a broken torch install is reported, not fatal: the jobs will say more
        info["torch_num_threads"] = None
        info["accelerator"] = f"unknown ({err})"
    return info


def versions() -> dict[str, str | None]:
    """Python and the libraries a result depends on."""
    return {"python": platform.python_version(), **package_versions(VERSIONED)}


# ---- output ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _load(values: list[float] | None) -> str:
    return "-" if values is None else " ".join(f"{v:.2f}" for v in values)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def reference_numbers(results: list[TaskResult]) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    """Numbered reference list for the markdown, and per (task, key) the cell that cites them."""
    listed: list[dict[str, Any]] = []
    cells: dict[tuple[str, str], str] = {}
    for result in results:
        seen = set()
        for row in result.bars:
            if row["key"] in seen:
                continue
            seen.add(row["key"])
            parts = []
            for ref in row["references"]:
                listed.append({**ref, "task": result.task})
                n = len(listed)
                parts.append(
                    f"{_fmt(ref['value'])} [{n}]"
                    if ref["value"] is not None
                    else f"{ref['note'].split(':')[0]} [{n}]"
                )
            cells[(result.task, row["key"])] = ", ".join(parts) if parts else "n/a"
    return listed, cells


def markdown(report: dict[str, Any], results: list[TaskResult]) -> str:
    m, v, g = report["machine"], report["versions"], report["git"]
    commit = (g["commit"] or "unknown")[:12] + (" (uncommitted changes)" if g.get("dirty") else "")
    lines = [
        f"# visionlab results: tier `{report['tier']}`",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- git commit: {commit}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"torch threads {m['torch_num_threads']} (OMP_NUM_THREADS={m['OMP_NUM_THREADS']}), "
        f"accelerator: {m['accelerator']}, {m['memory_gb']} GB memory",
        f"- load average (1, 5, 15 min): before {_load(report['load_before'])}, after {_load(report['load_after'])}",
        f"- python {v['python']}, torch {v['torch']}, torchvision {v['torchvision']}, "
        f"lightning {v['lightning']}, hydra-core {v['hydra-core']}, torchmetrics {v['torchmetrics']}",
        f"- overrides given to every job: {' '.join(report['overrides']) or 'none'}",
        f"- total wall time: {report['wall_s']:.1f} s; exit status {report['exit_status']}",
        "",
        "## Summary",
        "",
        "| task | result | bars passed | wall time (s) | training time (s) | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        judged = [b for b in r.bars if b["minimum"] is not None]
        passed = sum(b["result"] == "pass" for b in judged)
        wall = (
            sum(j.wall_s for j in r.jobs if j.wall_s is not None) if any(j.wall_s for j in r.jobs) else None
        )
        train = (
            sum(j.train_s for j in r.jobs if j.train_s is not None)
            if any(j.train_s for j in r.jobs)
            else None
        )
        lines.append(
            f"| {r.task} | {r.status} | {passed}/{len(judged)} | {_seconds(wall)} | {_seconds(train)} "
            f"| {_md(r.message or '')} |"
        )
    listed, cells = reference_numbers(results)
    lines += [
        "",
        "## Bars",
        "",
        "Values are measured on the embedded datasets. The reference column is **measured on the real "
        "dataset** (a paper's or the seed project's number for the same metric; numbered sources below): "
        "it is there for orientation, not as a bar.",
        "",
        "| task | metric | metrics.json key | value | bar | result | reference, measured on the real dataset |",
        "|---|---|---|---:|---|---|---|",
    ]
    for r in results:
        for b in r.bars:
            key = key_label(b["key"], b["minus"], b["job"], b["minus_job"])
            result = b["result"] + (f" ({b['why']})" if b["why"] and b["result"] != "pass" else "")
            lines.append(
                f"| {r.task} | {_md(b['metric'])} | `{key}` | {_fmt(b['value'], signed=b['minus'] is not None)} "
                f"| {b['bar'] or 'none (reported)'} | {_md(result)} | {_md(cells.get((r.task, b['key']), 'n/a'))} |"
            )
    lines += [
        "",
        "## Jobs",
        "",
        "| job | status | wall time (s) | training time (s) | load average before / after | run folder | command |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in results:
        for j in r.jobs:
            status = j.status + (f": {j.error}" if j.error else "")
            lines.append(
                f"| {j.name} | {_md(status)} | {_seconds(j.wall_s)} | {_seconds(j.train_s)} "
                f"| {_load(j.load_before)} / {_load(j.load_after)} | `{_md(j.run_dir)}` | `{_md(j.command)}` |"
            )
    lines += ["", "## References (measured on the real datasets)", ""]
    for n, ref in enumerate(listed, start=1):
        value = _fmt(ref["value"]) if ref["value"] is not None else ref["note"].split(":")[0]
        note = f" ({ref['note']})" if ref["note"] else ""
        lines.append(
            f"{n}. {ref['task']}, `{ref['key']}`: **{value}**, {ref['what']}. Source: {ref['source']}{note}."
        )
    return "\n".join(lines) + "\n"


def compact_table(results: list[TaskResult]) -> str:
    rows = [("task", "metric", "value", "bar", "result")]
    for r in results:
        for b in r.bars:
            rows.append(
                (
                    r.task,
                    b["metric"],
                    _fmt(b["value"], signed=b["minus"] is not None),
                    b["bar"] or "-",
                    b["result"],
                )
            )
        if not r.bars or r.status in ("error", "missing_experiment"):
            rows.append((r.task, "(task)", "-", "-", r.status))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
