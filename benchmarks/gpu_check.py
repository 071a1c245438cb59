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
import math
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.gpu_check_md import markdown
from benchmarks.machine import cpu_model, git_state, package_versions
from visionlab.keys import tasks_available

REPO = Path(__file__).resolve().parents[1]
#: every task (one per conf/task/*.yaml), in the order the tables list them
TASKS = tuple(tasks_available())
#: the whole check must fit in this many seconds on an H200 (the shell enforces it)
TOTAL_BUDGET_S = 480
DRY_TOTAL_BUDGET_S = 1800

#: the reference recipes (paper input sizes) per task, as in benchmarks/README.md (a task without one
#: is measured at its defaults only)
REFERENCE = {
    "finetune": "finetune_alexnet",
    "pose": "pose_augmented",
    "defect": "defect_ae",
    "segment": "segment_fcn_baseline",
    "embed": "embed_mnist",
}
#: the task whose compile=true is measured against eager (at its GPU defaults)
COMPILE_TASK = "pose"
#: the metric each recipe row reports (the first bar of benchmarks/results.py per task)
HEADLINE = {
    "finetune": "test/acc",
    "pose": "test/pcp/mean",
    "defect": "test/image_auroc",
    "segment": "test/miou",
    "embed": "test/acc",
}
#: pipeline efficiency (b/a) targets; every other task gets DEFAULT_EFFICIENCY
EFFICIENCY_TARGET = {"pose": 0.9, "defect": 0.9}
DEFAULT_EFFICIENCY = 0.8
OVERHEAD_TARGET = 0.97
SWEEP_SPEEDUP_TARGET = 3.0

#: the GPU sweep: 4 batch sizes x 2 dropouts = 8 embed jobs of one epoch
SWEEP = ["data.batch_size=64,128,256,512", "model.dropout=0.1,0.5", "trainer.max_epochs=1"]
SWEEP_JOBS = 8
DRY_SWEEP = ["data.batch_size=16,32", "model.dropout=0.5", "trainer.max_epochs=1"]
DRY_SWEEP_JOBS = 2
RECIPE_EPOCHS = 2

#: tiny settings per task for --dry-run (the same sizes as the tests use; none for a task not listed)
DRY: dict[str, list[str]] = {
    "finetune": ["data.image_size=32", "data.synthetic.image_size=32",
                 "data.synthetic.per_class={train: 6, val: 3, test: 3}", "data.batch_size=8"],
    "pose": ["data.image_size=64", "model.width=0.125", "data.synthetic.num_images=48",
             "data.train_count=24", "data.val_fraction=0.25", "data.batch_size=8"],
    "defect": ["data.synthetic={num_train: 20, num_test_good: 4, num_test_per_defect: 4, size: 64, seed: 0}",
               "data.val_fraction=0.2", "model.input_size=32", "model.channels=[8,16,32]",
               "model.bottleneck=16", "data.batch_size=8"],
    "segment": ["data.synthetic={num_images: 24, size: 64, seed: 0, val_fraction: 0.25}", "data.image_size=32",
                "data.batch_size=6", "model.encoder_stages=4", "model.decoder_channels=[32,16,16,8,8]"],
    "embed": ["data.synthetic={num_train: 400, num_test: 100, seed: 0}",
              "projector.digits=20"],
}  # fmt: skip
#: extra tiny settings of an experiment in --dry-run (AlexNet needs at least 63 px; the kornia recipe's
#: loader only slices cached images, so its 4 workers are left out on the CPU)
DRY_EXPERIMENT: dict[str, list[str]] = {
    "finetune_alexnet": ["data.image_size=64"],
    "pose_augmented_gpu": ["data.num_workers=0"],
}
#: what every dry-run job adds: one worker at most (the test machine has 1-2 cores)
DRY_COMMON = ["data.num_workers=0"]


@dataclass
class Step:
    """One command of the check: its name, the report section it feeds, its time budget on the GPU
    machine (the shell's `timeout`), the argv and extra environment."""

    name: str
    section: str
    budget_s: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: what the step writes, removed before it runs (so an earlier run's files never pass for its own)
    clean: list[str] = field(default_factory=list)

    def shell(self) -> str:
        """The step as one shell command line (its outputs removed first, environment first)."""
        env = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        command = " ".join([*(["env", *env] if env else []), shlex.join(self.argv)])
        return f"rm -rf -- {' '.join(map(shlex.quote, self.clean))} && {command}" if self.clean else command


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


# ---- the report -------------------------------------------------------------------------------------------
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
