"""The steps of `bash benchmarks/gpu_check.sh OUTDIR` and their report: every number the GPU must show.

The shell script runs each step of `plan()` under `timeout` and calls `report` after each one, so
`OUTDIR/gpu_check.json` and `OUTDIR/gpu_check.md` hold every finished step even when a later one fails.

    python -m benchmarks.gpu_check plan --out OUT --work WORK [--dry-run]   # the steps, one per line
    python -m benchmarks.gpu_check data --work WORK [--dry-run]             # generate every dataset used
    python -m benchmarks.gpu_check report --out OUT [--step NAME --rc RC --wall S]

This module imports no torch at the top, so `plan` and `report` start in well under a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_md import markdown
from benchmarks.gpu_check_report import build_report, record_step
from benchmarks.gpu_check_spec import (
    COMPILE_TASK,
    DRY,
    DRY_COMMON,
    DRY_EXPERIMENT,
    DRY_SWEEP,
    DRY_SWEEP_JOBS,
    DRY_TOTAL_BUDGET_S,
    RECIPE_EPOCHS,
    REFERENCE,
    REPO,
    SWEEP,
    SWEEP_JOBS,
    TASKS,
    TOTAL_BUDGET_S,
    Step,
)
from benchmarks.machine import cpu_model, git_state, package_versions


# ---- the plan ---------------------------------------------------------------------------------------------
def task_overrides(task: str, dry_run: bool, experiment: str | None = None) -> list[str]:
    """The tiny settings of `task` (at `experiment`) in a dry run; none on the GPU. An experiment keeps
    its own workers: Albumentations in worker processes is what the reference rows measure."""
    if not dry_run:
        return []
    if experiment is None:
        return [*DRY.get(task, []), *DRY_COMMON]
    return [*DRY.get(task, []), *DRY_EXPERIMENT.get(experiment, [])]


def throughput_step(
    name: str, section: str, budget: int, out: Path, work: Path, dry_run: bool,
    tasks: Sequence[str] = TASKS, experiments: dict[str, str] | None = None, extra: Sequence[str] = (),
    repeats: int = 3,
) -> Step:  # fmt: skip
    """A `python -m benchmarks.throughput` step over `tasks` (each at `experiments[task]` when given)."""
    timing = ["--steps", "2", "--warmup", "1", "--repeats", "1"] if dry_run else [
        "--steps", "50", "--warmup", "10", "--repeats", str(repeats)]  # fmt: skip
    overrides: list[str] = [f"paths.data_dir={work / 'data'}", *extra]
    for task in tasks:
        experiment = (experiments or {}).get(task)
        if experiment:
            overrides.append(f"{task}:experiment={experiment}")
        overrides += [f"{task}:{o}" for o in task_overrides(task, dry_run, experiment)]
    result = str(out / "steps" / f"{name}.json")
    argv = [sys.executable, "-m", "benchmarks.throughput", "--tasks", ",".join(tasks),
            "--trainer", "cpu" if dry_run else "gpu", *timing, "--keep-going", "--out", result, *overrides]  # fmt: skip
    return Step(name, section, budget, argv, clean=[result])


def train_argv(task: str, dry_run: bool, work: Path, *extra: str) -> list[str]:
    """`python train.py task=<task> trainer=<gpu|cpu> ...` with the check's data folder."""
    return [sys.executable, "train.py", f"task={task}", "trainer=cpu" if dry_run else "trainer=gpu",
            *task_overrides(task, dry_run), f"paths.data_dir={work / 'data'}",
            f"paths.output_dir={work / 'outputs'}", "trainer.enable_progress_bar=false", *extra]  # fmt: skip


def sweep_step(name: str, budget: int, work: Path, dry_run: bool, packed: bool) -> Step:
    """The embed sweep, one job after another (Hydra's basic launcher) or packed on the one device."""
    jobs = DRY_SWEEP_JOBS if dry_run else SWEEP_JOBS
    launcher = ["hydra/launcher=packed", f"hydra.launcher.n_jobs={jobs}"] if packed else []
    folder = str(work / "sweep" / name)
    argv = train_argv("embed", dry_run, work, *(DRY_SWEEP if dry_run else SWEEP), *launcher,
                      f"hydra.sweep.dir={folder}")  # fmt: skip
    argv.insert(2, "-m")
    return Step(name, "embed_sweep", budget, argv, clean=[folder])


def augment_step(out: Path, dry_run: bool) -> Step:
    """`python -m benchmarks.augment` for pose: the recipe alone, Albumentations in workers vs kornia."""
    sizes = (["--size", "32", "--batch", "4", "--samples", "8", "--steps", "1", "--workers", "0",
              "--device", "cpu"] if dry_run else
             ["--batch", "128", "--samples", "1024", "--steps", "10", "--workers", "15", "--device", "cuda"])  # fmt: skip
    result = str(out / "steps" / "augment_alone.json")
    argv = [
        sys.executable,
        "-m",
        "benchmarks.augment",
        "--task",
        "pose",
        *sizes,
        "--repeats",
        "1",
        "--out",
        result,
    ]
    return Step("augment_alone", "pose_augmentation", 30, argv, clean=[result])


def plan(out: Path, work: Path, dry_run: bool) -> list[Step]:
    """Every step of the check in the order it runs; the budgets (seconds on an H200) add up to more
    than the total on purpose: the shell gives each step min(its budget, the time left)."""
    data = [sys.executable, "-m", "benchmarks.gpu_check", "data", "--work", str(work)]
    compile_env = {"TORCH_COMPILE_DISABLE": "1"} if dry_run else {}
    steps = [
        Step("data", "steps", 60, data + (["--dry-run"] if dry_run else [])),
        throughput_step("throughput_default", "throughput_default", 90, out, work, dry_run),
        throughput_step("throughput_reference", "throughput_reference", 100, out, work, dry_run,
                        experiments=REFERENCE),
        throughput_step("pose_gpu_augment", "pose_augmentation", 40, out, work, dry_run, tasks=["pose"],
                        experiments={"pose": "pose_augmented_gpu"}),
        sweep_step("sweep_sequential", 90, work, dry_run, packed=False),
        sweep_step("sweep_packed", 50, work, dry_run, packed=True),
    ]  # fmt: skip
    for task in TASKS:
        epochs = 1 if dry_run else RECIPE_EPOCHS
        folder = str(work / "runs" / task)
        argv = train_argv(task, dry_run, work, f"trainer.max_epochs={epochs}", f"hydra.run.dir={folder}")
        steps.append(Step(f"recipe_{task}", "recipes", 30, argv, clean=[folder]))
    compiled = throughput_step("compile", "pose_augmentation", 80, out, work, dry_run, tasks=[COMPILE_TASK],
                               extra=["compile=true"], repeats=2)  # fmt: skip
    compiled.env = compile_env
    return [*steps, compiled, augment_step(out, dry_run)]


# ---- the data step ----------------------------------------------------------------------------------------
def data_configs(work: Path, dry_run: bool) -> list[tuple[str, list[str]]]:
    """(task, overrides) of every config the steps train on, so each dataset is generated once."""
    configs = []
    for task in TASKS:
        configs.append((task, task_overrides(task, dry_run)))
        experiment = REFERENCE.get(task)
        if experiment is not None:
            configs.append((task, [f"experiment={experiment}", *task_overrides(task, dry_run, experiment)]))
    return [(t, [f"task={t}", *o, f"paths.data_dir={work / 'data'}"]) for t, o in configs]


def generate_data(work: Path, dry_run: bool) -> int:
    """Generate every embedded dataset the steps read (timed apart from the measurements)."""
    import time

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import datamodules  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE)
    from datamodules.symbols import resolve_symbol_folders
    from visionlab.validation import task_classes

    for task, overrides in data_configs(work, dry_run):
        started = time.perf_counter()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=overrides)
        _, data_cls = task_classes(cfg)
        kwargs = OmegaConf.to_container(cfg.data, resolve=True)
        data_cls(data_dir=str(Path(cfg.paths.data_dir).resolve()), **kwargs).prepare_data()  # type: ignore[arg-type]
        if task == "embed":
            resolve_symbol_folders(OmegaConf.to_container(cfg.symbols, resolve=True), cfg.paths.data_dir)  # type: ignore[arg-type]
        print(f"data: {' '.join(overrides[:2])} ready in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


def write_report(out: Path) -> dict[str, Any]:
    """Rebuild OUT/gpu_check.json and OUT/gpu_check.md from the steps' files."""
    doc = build_report(out)
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=2))
    (out / "gpu_check.md").write_text(markdown(doc))
    return doc


# ---- machine and versions -----------------------------------------------------------------------------------
def machine() -> str:
    """CPU model and core count (read without importing torch)."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def versions() -> str:
    """torch / lightning / hydra-core / kornia / albumentations versions from the package metadata."""
    found = package_versions(("torch", "lightning", "hydra-core", "kornia", "albumentations"))
    return ", ".join(f"{name} {version or 'missing'}" for name, version in found.items())


def git_summary() -> str:
    """Commit and whether the tree has uncommitted changes."""
    state = git_state()
    if state["commit"] is None:
        return "unknown (no git)"
    return f"{str(state['commit'])[:12]}{' (uncommitted changes)' if state['dirty'] else ''}"


def gpu_name() -> str:
    """The GPU as nvidia-smi names it (or `none`)."""
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "none (nvidia-smi not found)"
    return result.stdout.strip().replace("\n", "; ") or "none"


def write_plan(out: Path, work: Path, dry_run: bool, command: str, keep_steps: bool = False) -> list[Step]:
    """OUT/meta.json and OUT/plan.json, and an empty steps.json unless `keep_steps` (a rerun of some
    steps keeps the others' records); returns the steps."""
    for folder in (out / "steps", out / "logs", work):
        folder.mkdir(parents=True, exist_ok=True)
    steps = plan(out, work, dry_run)
    meta = {"dry_run": dry_run, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "gpu": gpu_name(), "versions": versions(), "git": git_summary(),
            "command": command, "work": str(work),
            "budget_s": DRY_TOTAL_BUDGET_S if dry_run else TOTAL_BUDGET_S}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "plan.json").write_text(json.dumps([asdict(s) for s in steps], indent=2))
    if not keep_steps or not (out / "steps.json").exists():
        (out / "steps.json").write_text("{}")
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("plan", help="write OUT/plan.json and print the steps: name<TAB>budget<TAB>command")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--command", default="bash benchmarks/gpu_check.sh", help="the command, for the report")
    p.add_argument("--keep-steps", action="store_true", help="keep OUT/steps.json (a rerun of some steps)")
    d = sub.add_parser("data", help="generate every dataset the steps read into WORK/data")
    d.add_argument("--work", type=Path, required=True)
    d.add_argument("--dry-run", action="store_true")
    r = sub.add_parser("report", help="record a finished step and rewrite gpu_check.json and gpu_check.md")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--step", default=None)
    r.add_argument("--rc", type=int, default=0)
    r.add_argument("--wall", type=float, default=0.0)
    r.add_argument("--limit", type=int, default=None, help="the time limit the step ran under")
    args = parser.parse_args(argv)

    if args.action == "plan":
        for step in write_plan(args.out, args.work, args.dry_run, args.command, args.keep_steps):
            budget = step.budget_s if not args.dry_run else 600
            print(f"{step.name}\t{budget}\t{step.shell()}")
        return 0
    if args.action == "data":
        return generate_data(args.work, args.dry_run)
    if args.step:
        planned = {s["name"]: s for s in load_json_list(args.out / "plan.json")}
        step = planned.get(args.step, {})
        command = Step(**step).shell() if step else None
        record_step(args.out, args.step, args.rc, args.wall, args.limit, step.get("budget_s"), command)
    write_report(args.out)
    return 0


def load_json_list(path: Path) -> list[dict[str, Any]]:
    """A JSON list at `path`, or [] when absent."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return value if isinstance(value, list) else []


if __name__ == "__main__":
    sys.exit(main())
