"""The jobs of `benchmarks.results`: each task's steps per tier (pose: stage 1, then stage 2 chained
on it), the overrides given to every job or to one (`<task>:<key>=<value>`), and their command lines."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.results_spec import STUDIES, TASKS, TRAIN_PY, Job


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
