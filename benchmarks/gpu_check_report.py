"""gpu_check.json: each step's outcome and the sections built from the files the steps wrote
(throughput tables, pose augmentation, the sweep, the recipes), each row judged against its target."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_spec import (
    COMPILE_TASK,
    DEFAULT_EFFICIENCY,
    DRY_SWEEP,
    DRY_SWEEP_JOBS,
    EFFICIENCY_TARGET,
    HEADLINE,
    OVERHEAD_TARGET,
    RECIPE_EPOCHS,
    SWEEP,
    SWEEP_JOBS,
    SWEEP_SPEEDUP_TARGET,
    TASKS,
)


def load_json(path: Path) -> dict[str, Any]:
    """The JSON document at `path`, or {} when it is absent or unreadable (a step that did not finish)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def judge(value: float | None, target: float, dry_run: bool) -> str:
    """pass / fail against `target` (higher is better); `dry run` in a dry run; `missing` without a value."""
    if dry_run:
        return "dry run"
    if value is None or not math.isfinite(value):
        return "missing"
    return "pass" if value >= target else "fail"


def throughput_rows(doc: dict[str, Any], dry_run: bool, judged: bool = True) -> list[dict[str, Any]]:
    """One row per task of a `benchmarks.throughput` JSON, with the targets and results of both ratios."""
    rows = []
    for task, r in doc.get("tasks", {}).items():
        row = {"task": task, "skipped": r.get("skipped")}
        if r.get("skipped") is None:
            row.update(
                {
                    k: r.get(k)
                    for k in ("model", "batch_size", "precision", "num_workers", "bound", "real", "loop")
                }
            )
            row["input"] = "x".join(map(str, r.get("input_shape", [])))
            row["augment"] = (
                "+".join(w for w, on in (("cpu", r.get("augment")), ("gpu", r.get("gpu_augment"))) if on)
                or "no"
            )
            row["b_a"], row["b_c"] = r.get("pipeline_efficiency"), r.get("framework_overhead")
        if judged:
            row["b_a_target"] = EFFICIENCY_TARGET.get(task, DEFAULT_EFFICIENCY)
            row["b_c_target"] = OVERHEAD_TARGET
            row["b_a_result"] = judge(row.get("b_a"), row["b_a_target"], dry_run)
            row["b_c_result"] = judge(row.get("b_c"), row["b_c_target"], dry_run)
        rows.append(row)
    return rows


def throughput_section(out: Path, name: str, dry_run: bool) -> dict[str, Any]:
    """A throughput step's rows and the device/command it ran on."""
    doc = load_json(out / "steps" / f"{name}.json")
    return {"command": doc.get("command"), "device": doc.get("device"), "rows": throughput_rows(doc, dry_run)}


def pose_augmentation_section(out: Path, dry_run: bool) -> dict[str, Any]:
    """Albumentations in workers (the reference pose row) against kornia on the device, eager against
    compiled pose, and the augmentation alone."""
    workers = _task_row(out / "steps" / "throughput_reference.json", "pose")
    kornia = _task_row(out / "steps" / "pose_gpu_augment.json", "pose")
    eager = _task_row(out / "steps" / "throughput_default.json", COMPILE_TASK)
    compiled = _task_row(out / "steps" / "compile.json", COMPILE_TASK)
    rows = [
        {"what": "Albumentations in workers (`experiment=pose_augmented`)", **_rates(workers)},
        {"what": "kornia on the GPU (`experiment=pose_augmented_gpu`)", **_rates(kornia)},
        {"what": f"{COMPILE_TASK} eager (GPU defaults)", **_rates(eager)},
        {"what": f"{COMPILE_TASK} `compile=true` (GPU defaults)", **_rates(compiled)},
    ]
    gains = {
        "gpu_augment_speedup": _ratio(kornia.get("real"), workers.get("real")),
        "compile_speedup_real": _ratio(compiled.get("real"), eager.get("real")),
        "compile_speedup_bound": _ratio(compiled.get("bound"), eager.get("bound")),
    }
    alone = load_json(out / "steps" / "augment_alone.json").get("rows", [])
    return {"rows": rows, **gains, "augment_alone": alone, "dry_run": dry_run}


def _task_row(path: Path, task: str) -> dict[str, Any]:
    return load_json(path).get("tasks", {}).get(task, {})


def _rates(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("bound", "real", "loop", "pipeline_efficiency", "framework_overhead", "skipped")
    return {k: r.get(k) for k in keys}


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 and math.isfinite(a / b):
        return a / b
    return None


def sweep_jobs(sweep_dir: Path) -> dict[str, Any]:
    """Jobs of a finished (or killed) sweep folder: how many, how many completed, their mean wall time."""
    records = [load_json(p) for p in sorted(sweep_dir.glob("*/job.json"))]
    walls = [r["wall_s"] for r in records if isinstance(r.get("wall_s"), (int, float))]
    return {
        "jobs": len(records),
        "completed": sum(r.get("status") == "completed" for r in records),
        "mean_job_wall_s": sum(walls) / len(walls) if walls else None,
        "errors": sorted({r["error"] for r in records if r.get("error")})[:3],
    }


def embed_sweep_section(steps: dict[str, Any], work: Path | None, dry_run: bool) -> dict[str, Any]:
    """Wall times of the two sweeps (the whole command, as a user waits for it) and the speedup."""
    expected = DRY_SWEEP_JOBS if dry_run else SWEEP_JOBS
    rows = []
    for name in ("sweep_sequential", "sweep_packed"):
        step = steps.get(name, {})
        jobs = sweep_jobs(work / "sweep" / name) if work else {}
        ok = step.get("status") == "ok" and jobs.get("completed") == expected
        rows.append({"run": name.removeprefix("sweep_"), "wall_s": step.get("wall_s") if ok else None,
                     "status": step.get("status", "not run"), "expected_jobs": expected, **jobs})  # fmt: skip
    speedup = _ratio(rows[0]["wall_s"], rows[1]["wall_s"])
    return {"sweep": DRY_SWEEP if dry_run else SWEEP, "trainer": "cpu" if dry_run else "gpu", "rows": rows, "speedup": speedup, "target": SWEEP_SPEEDUP_TARGET,
            "result": judge(speedup, SWEEP_SPEEDUP_TARGET, dry_run)}  # fmt: skip


def recipes_section(steps: dict[str, Any], work: Path | None, dry_run: bool) -> dict[str, Any]:
    """Wall time (the whole `python train.py` command) and the headline metric of each recipe run."""
    rows = []
    for task in TASKS:
        step = steps.get(f"recipe_{task}", {})
        ok = step.get("status") == "ok"  # a failed step's folder may hold an older run
        metrics = load_json(work / "runs" / task / "metrics.json") if work is not None and ok else {}
        rows.append({
            "task": task, "status": step.get("status", "not run"), "wall_s": step.get("wall_s"),
            "train_s": metrics.get("time/train_s"), "metric": HEADLINE.get(task), "value": metrics.get(HEADLINE.get(task, "")),
            "result": "dry run" if dry_run else ("measured" if metrics else "missing"),
        })  # fmt: skip
    return {"epochs": 1 if dry_run else RECIPE_EPOCHS, "trainer": "cpu" if dry_run else "gpu", "rows": rows}


def record_step(
    out: Path, name: str, rc: int, wall: float, limit: int | None, budget: int | None, command: str | None
) -> None:
    """Add one finished step to `OUT/steps.json` (ok, failed, timeout or skipped), with the time limit
    it ran under (its budget, or less when less of the total was left)."""
    path = out / "steps.json"
    steps = load_json(path)
    status = {0: "ok", 124: "timeout", 137: "timeout", -1: "skipped: no time left"}.get(rc, "failed")
    log = out / "logs" / f"{name}.log"
    steps[name] = {"status": status, "rc": rc, "wall_s": round(wall, 1), "limit_s": limit, "budget_s": budget,
                   "log": str(log.relative_to(out)), "error": error_line(log) if status == "failed" else None,
                   "command": command}  # fmt: skip
    path.write_text(json.dumps(steps, indent=2))


def error_line(log: Path) -> str | None:
    """The last line of a failed step's log that looks like an error (or its last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    for line in reversed(lines):
        if "Error" in line or line.startswith("error") or "error:" in line:
            return line[:300]
    return lines[-1][:300] if lines else None


def build_report(out: Path) -> dict[str, Any]:
    """The whole gpu_check.json document from what the steps have written so far."""
    meta = load_json(out / "meta.json")
    dry_run = bool(meta.get("dry_run"))
    work = Path(meta["work"]) if meta.get("work") else None
    steps = load_json(out / "steps.json")
    return {
        **meta,
        "targets": {"pipeline_efficiency": {**EFFICIENCY_TARGET, "others": DEFAULT_EFFICIENCY},
                    "framework_overhead": OVERHEAD_TARGET, "packed_sweep_speedup": SWEEP_SPEEDUP_TARGET},
        "wall_s": round(sum(s.get("wall_s") or 0 for s in steps.values()), 1),
        "steps": steps,
        "throughput_default": throughput_section(out, "throughput_default", dry_run),
        "throughput_reference": throughput_section(out, "throughput_reference", dry_run),
        "pose_augmentation": pose_augmentation_section(out, dry_run),
        "embed_sweep": embed_sweep_section(steps, work, dry_run),
        "recipes": recipes_section(steps, work, dry_run),
    }  # fmt: skip
