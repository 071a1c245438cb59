"""Results of every task's recipe against its bars: each recipe is run as `python train.py ...` in a
subprocess (exactly what a user runs), then its metrics.json is read and compared with the bars below.

    python -m benchmarks.results [--tier default|cpu] [--tasks pose defect ...] [--out DIR]
                                 [--timeout S] [--verbose] [--dry-run] [override ...]

Recipes (`<t>` = the task):
  tier default  python train.py task=<t>
  tier cpu      python train.py experiment=<t>_cpu          (conf/experiment/<t>_cpu.yaml)
pose runs stage 1, then stage 2 chained on it: `... stage=2 prev_ckpt=<stage-1 best.ckpt>`.
Studies run only when named with --tasks, with the same fixed recipes in every tier:
  finetune_transfer  python train.py experiment=finetune_pretrain, then experiment=finetune_transfer
                     model.weights=<its best.ckpt>, then the same with model.weights=null (from scratch)

Every job writes into a fixed run folder, `<out>/runs/<tier>/<job>/` (`hydra.run.dir`), its output into
`<out>/logs/<tier>_<job>.log`; the command writes `<out>/results.md` and `<out>/results.json` and prints
a compact table. Overrides are added to every job (`trainer.max_epochs=1`), or, written
`<task>:<override>`, to that task's (or study's) jobs only (`pose:data.image_size=64`); `<job>:<override>`
to that job only (`pose_stage2`, `finetune_pretrain`, `finetune_scratch`). `--set <task>:<override>` is
the same as the positional form.

Exit status: 0 when every job ran and every bar passed; 1 when a bar failed or a metric was missing, a
job failed, or a tier-cpu experiment file does not exist (the other tasks still run); 2 on a usage error
(unknown task or tier, an override of the wrong form, an --out folder that already holds these runs).

The bars and the reference numbers are the two tables BARS and REFERENCES below: edit them there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.machine import git_state
from benchmarks.results_plan import (
    UsageError,
    display_command,
    experiment_name,
    job_argv,
    plan_jobs,
    recipe_for,
    scope_names,
    split_overrides,
    steps,
)
from benchmarks.results_report import compact_table, machine_info, markdown, versions
from benchmarks.results_spec import (
    BARS,
    EXPERIMENT_DIR,
    REPO,
    STUDIES,
    TASKS,
    TIERS,
    Job,
    TaskResult,
    evaluate_bar,
    key_label,
    references_for,
)


def error_line(log_text: str) -> str:
    """The line that says why a job failed: `error: ...` (visionlab's own), else the last exception line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[:400]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line):
            return line[:400]
    return (lines[-1] if lines else "no output")[:400]


def run_job(job: Job, timeout: float | None, echo: Callable[[str], None] | None) -> None:
    """Run `job` as a subprocess from the repository root; fill in its status, times and files."""
    job.argv = job_argv(job)
    job.command = display_command(job.argv)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    job.load_before = list(os.getloadavg())
    started = time.perf_counter()
    with open(job.log, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"$ {job.command}\n")
        log.flush()
        proc = subprocess.Popen(
            job.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", start_new_session=True,
        )  # fmt: skip

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if echo is not None:
                    echo(line.rstrip("\n"))

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            job.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            job.returncode = proc.wait()
            job.status, job.error = "timeout", f"killed after the --timeout of {timeout:g} s"
        reader.join(timeout=30)
    job.wall_s = time.perf_counter() - started
    job.load_after = list(os.getloadavg())

    metrics_file = Path(job.run_dir) / "metrics.json"
    best = Path(job.run_dir) / "checkpoints" / "best.ckpt"
    job.best_ckpt = str(best) if best.is_file() else None
    if job.status == "timeout":
        return
    if job.returncode != 0:
        job.status = "failed"
        job.error = f"exit status {job.returncode}: {error_line(Path(job.log).read_text(errors='replace'))}"
        return
    if not metrics_file.is_file():
        job.status, job.error = "failed", f"exit status 0 but no {metrics_file} was written"
        return
    job.status, job.metrics_file = "ok", str(metrics_file)
    metrics = read_metrics(metrics_file)
    train_s = metrics.get("time/train_s")
    job.train_s = float(train_s) if isinstance(train_s, (int, float)) else None


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the job and its DataLoader workers (the job leads its own process group)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def read_metrics(path: Path | str | None) -> dict[str, Any]:
    """metrics.json as a dict; {} when it is absent or unreadable."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def judge_task(result: TaskResult, tier: str) -> None:
    """Fill in the task's bar rows and its status from its jobs."""
    by_role = {job.role: job for job in result.jobs}

    def metrics_of(role: str | None) -> dict[str, Any] | None:
        job = by_role.get(role) if role is not None else None
        return read_metrics(job.metrics_file) if job is not None and job.status == "ok" else None

    for bar in BARS[tier].get(result.task, ()):
        row = evaluate_bar(bar, metrics_of(bar.job), metrics_of(bar.minus_job))
        if row["result"] == "missing" and bar.minimum is None:
            row["result"] = "info"
        row["references"] = references_for(result.task, bar.key)
        result.bars.append(row)
    if result.status == "missing_experiment":
        return
    failed = [j for j in result.jobs if j.status != "ok"]
    if failed:
        result.status = "error"
        result.message = "; ".join(f"{j.name}: {j.status}: {j.error}" for j in failed)
    elif all(r["result"] in ("pass", "info") for r in result.bars):
        result.status = "pass"
    else:
        result.status = "fail"
        result.message = "; ".join(
            f"{r['metric']}: {r['result']}" + (f" ({r['why']})" if r["why"] else "")
            for r in result.bars
            if r["result"] not in ("pass", "info")
        )


# ---- the run -------------------------------------------------------------------------------------------


def run_task(
    task: str, tier: str, out: Path, common: list[str], scoped: dict[str, list[str]],
    timeout: float | None, log: Callable[[str], None], echo: Callable[[str], None] | None,
) -> TaskResult:  # fmt: skip
    result = TaskResult(task=task, jobs=plan_jobs(task, tier, out, common, scoped))
    experiment = experiment_name(task, tier)
    if experiment is not None and not (EXPERIMENT_DIR / f"{experiment}.yaml").is_file():
        result.status = "missing_experiment"
        result.message = (
            f"conf/experiment/{experiment}.yaml does not exist: the tier-{tier} recipe "
            f"`python train.py experiment={experiment}` cannot run"
        )
        for job in result.jobs:
            job.status, job.error = "skipped", result.message
            job.command = display_command(job_argv(job))
        log(f"[{task}] {result.message}")
        judge_task(result, tier)
        return result
    first = result.jobs[0]
    for step, job in zip(steps(task, tier), result.jobs, strict=True):
        if step.chained():  # pose stage 2, the transfer: on the first job's best checkpoint
            if first.status != "ok" or first.best_ckpt is None:
                job.status = "skipped"
                job.error = f"{first.name} did not finish with a checkpoints/best.ckpt to start from"
                job.command = display_command(job_argv(job))
                log(f"[{job.name}] skipped: {job.error}")
                continue
            job.recipe = recipe_for(step, first.best_ckpt)
        log(f"[{job.name}] {shlex.join(['python', 'train.py', *job.recipe, *job.overrides])}")
        run_job(job, timeout, echo)
        times = f"{job.wall_s:.1f} s wall" + (f", {job.train_s:.1f} s training" if job.train_s else "")
        log(f"[{job.name}] {job.status} ({times})" + (f": {job.error}" if job.error else ""))
    judge_task(result, tier)
    return result


# ---- command line --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.results",
        description="Run every task's recipe (python train.py ...) and compare its metrics with the bars.",
        epilog="Exit status: 0 all bars pass; 1 a bar failed, a metric is missing, a job failed or an "
        "experiment file is missing; 2 usage error.",
    )
    parser.add_argument("--tier", default="default", help="default (task=<t>) or cpu (experiment=<t>_cpu)")
    parser.add_argument(
        "--tasks", nargs="+", default=None,
        help=f"tasks to run (default: all: {' '.join(TASKS)}); studies, only when named: {' '.join(STUDIES)}",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="output folder (default: outputs/results/<date>_<time>)")
    parser.add_argument("--set", action="append", default=[], metavar="TASK:OVERRIDE",
                        help="an override for one task's jobs only (same as a positional <task>:<override>)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None, help="seconds after which a job is killed")
    parser.add_argument("--verbose", action="store_true", help="echo every job's output")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and bars, run nothing")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job, or <task>:<override>")
    return parser.parse_args(argv)


def resolve_tasks(given: list[str] | None) -> tuple[list[str], list[str]]:
    """Task names from --tasks (space- or comma-separated) and any overrides argparse put among them."""
    if not given:
        return list(TASKS), []
    tasks, stray = [], []
    for item in given:
        if "=" in item or item.startswith("~"):
            stray.append(item)
            continue
        for name in filter(None, item.split(",")):
            if name not in (*TASKS, *STUDIES):
                raise UsageError(f"unknown task {name!r}; expected some of {', '.join((*TASKS, *STUDIES))}")
            if name not in tasks:
                tasks.append(name)
    if not tasks:
        raise UsageError("--tasks names no task")
    return tasks, stray


def default_out() -> Path:
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return Path(os.environ.get("VISIONLAB_OUTPUT_DIR", "outputs")) / "results" / stamp


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.tier not in TIERS:
            raise UsageError(f"--tier {args.tier!r}: expected one of {', '.join(TIERS)}")
        tasks, stray = resolve_tasks(args.tasks)
        for item in args.set:
            if item.partition(":")[0] not in scope_names():
                raise UsageError(f"--set {item!r}: expected <task>:<key>=<value>")
        given = [*stray, *args.overrides, *args.set]
        common, scoped = split_overrides(given)
        if any(o.lstrip("+~").startswith(("hydra.run.dir", "task=", "experiment=")) for o in common):
            raise UsageError("hydra.run.dir, task= and experiment= are set by this command; leave them out")
        out = (Path(args.out) if args.out else default_out()).expanduser().resolve()
        plans = {t: plan_jobs(t, args.tier, out, common, scoped) for t in tasks}
        taken = [
            j.run_dir
            for js in plans.values()
            for j in js
            if Path(j.run_dir).exists() and any(Path(j.run_dir).iterdir())
        ]
        if taken and not args.dry_run:
            raise UsageError(f"{taken[0]} already holds a run; give another --out")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(text, flush=True)

    if args.dry_run:
        for task, jobs in plans.items():
            for job in jobs:
                log(
                    " ".join(
                        ["python", "train.py", *job.recipe, *job.overrides, f"hydra.run.dir={job.run_dir}"]
                    )
                )
            for bar in BARS[args.tier].get(task, ()):
                key = key_label(bar.key, bar.minus, bar.job, bar.minus_job)
                target = f">= {bar.minimum:g}" if bar.minimum is not None else "(reported)"
                log(f"    bar: {bar.metric}: {key} {target}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "benchmarks.results", *(sys.argv[1:] if argv is None else argv)])
    report: dict[str, Any] = {
        "tier": args.tier,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command,
        "overrides": common,
        "task_overrides": scoped,
        "git": git_state(),
        "versions": versions(),
        "machine": machine_info(),
        "load_before": list(os.getloadavg()),
    }
    log(f"tier {args.tier}: {', '.join(tasks)} -> {out}")
    started = time.perf_counter()
    echo = (lambda line: print(f"    {line}", flush=True)) if args.verbose else None
    results = [run_task(t, args.tier, out, common, scoped, args.timeout, log, echo) for t in tasks]
    report["wall_s"] = time.perf_counter() - started
    report["load_after"] = list(os.getloadavg())
    report["exit_status"] = 0 if all(r.status == "pass" for r in results) else 1
    report["tasks"] = {
        r.task: {
            "status": r.status,
            "message": r.message,
            "recipe": [j.recipe_command() for j in r.jobs],
            "wall_s": sum(j.wall_s for j in r.jobs if j.wall_s is not None),
            "train_s": sum(j.train_s for j in r.jobs if j.train_s is not None),
            "bars": r.bars,
            "jobs": [asdict(j) for j in r.jobs],
        }
        for r in results
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(markdown(report, results))
    log("")
    log(compact_table(results))
    log(f"\nwritten: {out / 'results.md'}, {out / 'results.json'} (exit status {report['exit_status']})")
    return int(report["exit_status"])


if __name__ == "__main__":
    sys.exit(main())
