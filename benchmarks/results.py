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
import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visionlab.keys import tasks_available

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = REPO / "train.py"
EXPERIMENT_DIR = REPO / "conf" / "experiment"
#: every task (one per conf/task/*.yaml), in the order the tables list them
TASKS = tuple(tasks_available())
TIERS = ("default", "cpu")
#: studies: run only when named with --tasks (each is several trainings, longer than a tier-1 task, and
#: not a task's own recipe); the same fixed experiments in every tier
STUDIES = ("finetune_transfer",)


# ---- the bars: one table, per tier and task -------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One number a task's run must reach. `key` is read from the metrics.json of the job whose role is
    `job` (see `steps`: "main", the task's run, for pose stage 1; "stage2": the pose stage-2 run); with
    `minus`, the value is metrics[key] - metrics[minus] (a gain), both read from the same file unless
    `minus_job` names another job's. `minimum=None`: reported only."""

    metric: str
    key: str
    minimum: float | None
    job: str = "main"
    minus: str | None = None
    minus_job: str | None = None


#: stage 2 evaluates the whole chain on the same test images and writes both stages' numbers
#: (test/stage1/..., test/stage2/...) into its metrics.json, so the gain is read from that one file
_POSE_GAIN_PCP = (
    "stage 2 - stage 1: test PCP mean (same test images)",
    "test/stage2/pcp/mean",
    "test/stage1/pcp/mean",
)
_POSE_GAIN_PDJ = (
    "stage 2 - stage 1: test PDJ@0.2 (same test images)",
    "test/stage2/pdj@0.2",
    "test/stage1/pdj@0.2",
)

#: the transfer study, the same in both tiers: fine-tuned from the pretrain checkpoint against the same
#: recipe from random weights, on the same test images. Measured once (2026-12-02, one core): transfer
#: 0.729, scratch 0.333, gain +0.40 (README "Fine-tuning from your own checkpoint"); the bar is half of
#: that, room for seed-to-seed spread (not measured) while a transfer that loads nothing (gain ~0) fails.
_TRANSFER_BARS = (
    Bar("pretrain: test accuracy (its six classes)", "test/acc", None, job="pretrain"),
    Bar("transfer: test accuracy (six other classes, 20 images each)", "test/acc", None, job="transfer"),
    Bar("from scratch, same recipe: test accuracy", "test/acc", None, job="scratch"),
    Bar("transfer - scratch: test accuracy (same test images)", "test/acc", 0.20, job="transfer",
        minus="test/acc", minus_job="scratch"),
)  # fmt: skip

BARS: dict[str, dict[str, tuple[Bar, ...]]] = {
    "default": {
        "finetune": (Bar("test accuracy", "test/acc", 0.85),),
        "pose": (
            Bar("stage 1: test PCP mean (arms + legs)", "test/pcp/mean", 0.35),
            Bar(_POSE_GAIN_PCP[0], _POSE_GAIN_PCP[1], None, job="stage2", minus=_POSE_GAIN_PCP[2]),
            Bar(_POSE_GAIN_PDJ[0], _POSE_GAIN_PDJ[1], None, job="stage2", minus=_POSE_GAIN_PDJ[2]),
        ),
        "defect": (
            Bar("test image AUROC", "test/image_auroc", 0.85),
            Bar("test pixel AUROC", "test/pixel_auroc", 0.93),
            Bar("test AU-PRO (FPR <= 0.3)", "test/aupro", None),
        ),
        "segment": (Bar("test mIoU", "test/miou", 0.50),),
        "embed": (
            Bar("digit test accuracy", "test/acc", 0.98),
            Bar("Greek letters: leave-one-out 1-NN accuracy", "test/symbols/loo_1nn_acc", 0.85),
            Bar("Greek letters: new-letter 1-NN accuracy", "test/symbols/new_1nn_acc", None),
        ),
        "finetune_transfer": _TRANSFER_BARS,
    },
    "cpu": {
        "finetune": (Bar("test accuracy", "test/acc", 0.95),),
        "pose": (
            Bar("stage 1: test PCP mean (arms + legs)", "test/pcp/mean", 0.60),
            Bar(_POSE_GAIN_PCP[0], _POSE_GAIN_PCP[1], 0.03, job="stage2", minus=_POSE_GAIN_PCP[2]),
            Bar(_POSE_GAIN_PDJ[0], _POSE_GAIN_PDJ[1], 0.03, job="stage2", minus=_POSE_GAIN_PDJ[2]),
        ),
        "defect": (
            Bar("test image AUROC", "test/image_auroc", 0.95),
            Bar("test pixel AUROC", "test/pixel_auroc", 0.97),
            Bar("test AU-PRO (FPR <= 0.3)", "test/aupro", 0.85),
        ),
        "segment": (Bar("test mIoU", "test/miou", 0.75),),
        "embed": (
            Bar("digit test accuracy", "test/acc", 0.99),
            Bar("Greek letters: leave-one-out 1-NN accuracy", "test/symbols/loo_1nn_acc", 0.95),
            Bar("Greek letters: new-letter 1-NN accuracy", "test/symbols/new_1nn_acc", 0.90),
        ),
        "finetune_transfer": _TRANSFER_BARS,
    },
}


# ---- reference numbers, measured on the real datasets ----------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A published (or the seed project's) number for the metric `key` of a task, measured on the real
    dataset, not on the embedded one. `value=None`: there is none to compare with; `note` says why."""

    key: str
    value: float | None
    what: str
    source: str
    note: str = ""


REFERENCES: dict[str, tuple[Reference, ...]] = {
    "finetune": (
        Reference(
            "test/acc",
            None,
            "AlexNet / VGG16 fine-tuned in the seed's study",
            "the seed project",
            "none: the seed reports no accuracy on these 12 classes (its own images); no comparable number",
        ),
    ),
    "pose": (
        Reference(
            "test/pcp/mean",
            0.61,
            "DeepPose, full 3-stage cascade (not stage 1 alone), LSP test set, strict PCP@0.5, mean of "
            "upper/lower arms and legs (the paper's 'Ave.')",
            "Toshev & Szegedy, DeepPose: Human Pose Estimation via Deep Neural Networks, CVPR 2014, Table 1 "
            "(arXiv:1312.4659)",
            "quoted from the paper's LSP table; the copies reachable when this table was written showed "
            "only its first page, so re-check before publishing",
        ),
        Reference(
            "test/stage2/pcp/mean",
            None,
            "PCP gain of stage 2 over stage 1",
            "Toshev & Szegedy 2014",
            "n/a: the paper plots per-stage PDJ on FLIC/LSP (figure) rather than tabulating this gain",
        ),
        Reference(
            "test/stage2/pdj@0.2",
            None,
            "PDJ@0.2 gain of stage 2 over stage 1",
            "Toshev & Szegedy 2014",
            "n/a: shown in a figure only",
        ),
    ),
    "defect": (
        Reference(
            "test/image_auroc",
            None,
            "AE (L2) on MVTec AD hazelnut",
            "Bergmann et al., MVTec AD, CVPR 2019 / IJCV 2021",
            "n/a: no per-category AE (L2) figure found in the sources reachable when this table was written",
        ),
        Reference(
            "test/pixel_auroc", None, "AE (L2) on MVTec AD hazelnut", "Bergmann et al. 2019 / 2021", "n/a"
        ),
        Reference("test/aupro", None, "AE (L2) on MVTec AD hazelnut", "Bergmann et al. 2021", "n/a"),
    ),
    "segment": (
        Reference(
            "test/miou",
            0.682,
            "the seed's FCN (ResNet encoder), 9-class VOC subset; 0.689 with its improved recipe",
            "the seed project, as quoted in docs/segment.md ('The reference pair')",
        ),
        Reference(
            "test/miou",
            0.636,
            "FCN-32s (VGG16), PASCAL VOC 2011 seg11valid, 21 classes",
            "reference implementation README, github.com/shelhamer/fcn.berkeleyvision.org",
        ),
        Reference(
            "test/miou",
            0.622,
            "FCN-8s (VGG16), PASCAL VOC 2012 test, 21 classes",
            "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015, "
            "abstract (arXiv:1411.4038)",
        ),
        Reference(
            "test/miou",
            0.605,
            "torchvision fcn_resnet50, COCO val2017 on the 20 VOC classes + background",
            "torchvision FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1 metadata (torchvision 0.29)",
        ),
    ),
    "embed": (
        Reference(
            "test/acc",
            None,
            "the reference MNIST network (conv 10 / 20, fc 50) on real MNIST",
            "PyTorch MNIST example / the course reference",
            "n/a: no published accuracy found in the sources reachable when this table was written",
        ),
        Reference(
            "test/symbols/loo_1nn_acc",
            None,
            "Greek letters (course set) by nearest neighbour",
            "the course reference",
            "none: no published number",
        ),
        Reference(
            "test/symbols/new_1nn_acc",
            None,
            "new Greek letters by nearest neighbour",
            "the course reference",
            "none: no published number",
        ),
    ),
}


# ---- jobs -------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One `python train.py ...` run and what came of it."""

    name: str  # pose, pose_stage2, defect, ...
    task: str
    role: str  # what BARS call it (`Bar.job`): main, stage2, pretrain, ...
    recipe: list[str]  # the user's overrides (task=pose / experiment=pose_cpu, stage=2 ...)
    overrides: list[str]  # the extra ones given to this command
    run_dir: str
    log: str
    argv: list[str] = field(default_factory=list)
    command: str = ""
    status: str = "pending"  # ok | failed | timeout | skipped
    returncode: int | None = None
    error: str | None = None
    wall_s: float | None = None
    train_s: float | None = None
    load_before: list[float] | None = None
    load_after: list[float] | None = None
    metrics_file: str | None = None
    best_ckpt: str | None = None

    def recipe_command(self) -> str:
        return shlex.join(["python", "train.py", *self.recipe])


@dataclass
class TaskResult:
    task: str
    status: str = "pending"  # pass | fail | error | missing_experiment
    message: str | None = None
    jobs: list[Job] = field(default_factory=list)
    bars: list[dict[str, Any]] = field(default_factory=list)


class UsageError(Exception):
    """A mistake on the command line: exit status 2."""


def _hydra_value(text: str) -> str:
    """`text` as a Hydra override value: quoted when it holds characters the grammar would read."""
    if re.fullmatch(r"[\w./+\-@]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def split_overrides(items: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Plain overrides (every job) and `<job or task>:<override>` ones, by prefix."""
    job_names = scope_names()
    common: list[str] = []
    scoped: dict[str, list[str]] = {}
    for item in items:
        prefix, colon, rest = item.partition(":")
        if colon and prefix in job_names:
            if "=" not in rest:
                raise UsageError(f"{item!r}: expected <task>:<key>=<value>")
            scoped.setdefault(prefix, []).append(rest)
        elif "=" not in item and not item.startswith("~"):
            raise UsageError(f"{item!r} is not a Hydra override (key=value) nor <task>:<key>=<value>")
        else:
            common.append(item)
    return common, scoped


def experiment_name(task: str, tier: str) -> str | None:
    """The tier-cpu experiment file a task's recipe needs (None: the default tier, or a study)."""
    return f"{task}_cpu" if tier == "cpu" and task in TASKS else None


#: a refiner sees 14 crops per training image: its CPU budget is a fraction of the epochs and images
#: (the commands in conf/experiment/pose_cpu.yaml and docs/pose.md)
REFINER_BUDGET = {
    "default": ("trainer.max_epochs=2", "trainer.limit_train_batches=0.25"),
    "cpu": ("trainer.max_epochs=4", "trainer.limit_train_batches=0.5"),
}
#: what a stage-2 recipe shows until stage 1 has written its checkpoint
PREV_PLACEHOLDER = "<stage-1 best.ckpt>"
#: what stands in a recipe for the first job's checkpoints/best.ckpt (see `Step`)
PREV = "{prev}"


@dataclass(frozen=True)
class Step:
    """One job of a task: its `name`, its `role` in BARS (`Bar.job`) and its recipe. PREV in the recipe
    is the first job's checkpoints/best.ckpt, shown as `waiting` until that job has written it; a step
    without PREV does not depend on the first job."""

    name: str
    role: str
    recipe: tuple[str, ...]
    waiting: str = PREV_PLACEHOLDER

    def chained(self) -> bool:
        return any(PREV in part for part in self.recipe)


def steps(task: str, tier: str) -> list[Step]:
    """The jobs of `task` in order: pose stage 1, then stage 2 refining its best.ckpt; the transfer study
    pretrain, then fine-tuning its best.ckpt, then the same recipe from scratch; one job otherwise."""
    if task == "finetune_transfer":
        transfer = "experiment=finetune_transfer"
        return [
            Step("finetune_pretrain", "pretrain", ("experiment=finetune_pretrain",)),
            Step(
                "finetune_transfer", "transfer", (transfer, f"model.weights={PREV}"), "<pretrain best.ckpt>"
            ),
            Step("finetune_scratch", "scratch", (transfer, "model.weights=null")),
        ]
    base = f"experiment={task}_cpu" if tier == "cpu" else f"task={task}"
    if task == "pose":
        return [
            Step(task, "main", (base,)),
            Step(f"{task}_stage2", "stage2", (base, "stage=2", f"prev_ckpt={PREV}", *REFINER_BUDGET[tier])),
        ]
    return [Step(task, "main", (base,))]


def scope_names() -> set[str]:
    """What `<name>:<override>` may name: a task or study (all its jobs) or one job."""
    return {*TASKS, *STUDIES, *(step.name for t in (*TASKS, *STUDIES) for step in steps(t, "default"))}


def recipe_for(step: Step, prev: str | None = None) -> list[str]:
    """The step's overrides, PREV filled in with `prev` (its placeholder while the first job has not run)."""
    value = step.waiting if prev is None else _hydra_value(prev)
    return [part.replace(PREV, value) for part in step.recipe]


def plan_jobs(task: str, tier: str, out: Path, common: list[str], scoped: dict[str, list[str]]) -> list[Job]:
    """The jobs of `task` (`steps`); a chained job's checkpoint is filled in once the first job ran."""
    jobs = []
    for step in steps(task, tier):
        name = step.name
        extra = [*common, *scoped.get(task, []), *(scoped.get(name, []) if name != task else [])]
        run_dir = out / "runs" / tier / name
        jobs.append(
            Job(
                name=name,
                task=task,
                role=step.role,
                recipe=recipe_for(step),
                overrides=extra,
                run_dir=str(run_dir),
                log=str(out / "logs" / f"{tier}_{name}.log"),
            )
        )
    return jobs


def job_argv(job: Job) -> list[str]:
    return [
        sys.executable, str(TRAIN_PY), *job.recipe, *job.overrides,
        f"hydra.run.dir={_hydra_value(job.run_dir)}",
    ]  # fmt: skip


def display_command(argv: Sequence[str]) -> str:
    """The job's command as a user types it in the repository root (the job runs there)."""
    return shlex.join(["python", "train.py", *argv[2:]])


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


# ---- bars ---------------------------------------------------------------------------------------------


def _number(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evaluate_bar(
    bar: Bar, metrics: dict[str, Any] | None, minus_metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The bar's value and result: pass | fail | missing (a key absent from metrics.json) | not run
    (a job it reads wrote no metrics) | info (no bar: reported only). `minus_metrics`: the metrics of
    `bar.minus_job`, when the subtracted key comes from another job."""
    row: dict[str, Any] = {**asdict(bar), "value": None, "result": None, "why": None}
    row["bar"] = None if bar.minimum is None else f">= {bar.minimum:g}"
    other = minus_metrics if bar.minus_job is not None else metrics
    if metrics is None or (bar.minus is not None and other is None):
        row["result"], row["why"] = "not run", "the job produced no metrics.json"
        return row
    assert other is not None
    absent = [bar.key] if _number(metrics, bar.key) is None else []
    if bar.minus is not None and _number(other, bar.minus) is None:
        absent.append(bar.minus)
    if absent:
        row["result"] = "missing"
        row["why"] = f"{', '.join(absent)} not in metrics.json"
        return row
    value = _number(metrics, bar.key)
    assert value is not None
    if bar.minus is not None:
        value -= _number(other, bar.minus) or 0.0
    row["value"] = value
    if bar.minimum is None:
        row["result"] = "info"
    elif not math.isfinite(value):
        row["result"], row["why"] = "fail", "not a finite number"
    else:
        row["result"] = "pass" if value >= bar.minimum else "fail"
    return row


def key_label(key: str, minus: str | None, job: str, minus_job: str | None) -> str:
    """What a bar reads: `key`, `key - minus` (one file), or `key (job) - minus (minus_job)`."""
    if minus is None:
        return key
    return f"{key} - {minus}" if minus_job is None else f"{key} ({job}) - {minus} ({minus_job})"


def references_for(task: str, key: str) -> list[dict[str, Any]]:
    return [asdict(r) for r in REFERENCES.get(task, ()) if r.key == key]


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


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, accelerator, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
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
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "lightning", "hydra-core", "torchmetrics"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


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
