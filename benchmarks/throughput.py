"""Training throughput of each task, three ways side by side in one process.

For each task's default model and input size (the real config composed with Hydra, plus overrides):

  (a) bound  the task module's training step (forward, loss, backward, optimizer step) on one batch of
             random images that is already on the device: no data pipeline at all;
  (b) real   the task's DataModule (decode, augmentation, collation, transfer) and LightningModule under
             a Lightning Trainer built from the task's trainer config, with the run's loggers and
             callbacks (TensorBoard, checkpoints, ...) writing into a temporary folder, validation off;
  (c) loop   a hand-written PyTorch loop over the same DataLoader and module, in the style of the
             reference works: for batch in loader: to(device); normalise; training step; backward; step.

Each is timed over `--steps` training steps after `--warmup` steps, `--repeats` times; the median is
reported. real/bound is the pipeline efficiency, real/loop the framework overhead (1.0 = none).

    python -m benchmarks.throughput --tasks pose,defect --steps 50 --out results.json
    python -m benchmarks.throughput --trainer gpu pose:experiment=pose_augmented data.num_workers=auto
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

import datamodules  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
from benchmarks.common import (
    TASKS,
    apply_torch_flags,
    compose_task,
    device_of,
    environment,
    parse_tasks,
    peak_rss_mib,
)
from benchmarks.timing import (
    Settings,
    TrainStep,
    batch_size,
    prepare,
    random_like,
    time_bound,
    time_loop,
    time_trainer,
)
from visionlab.errors import ConfigError
from visionlab.runner import build_datamodule, build_module
from visionlab.validation import task_classes

#: what a task module's `self.log` says on every step when no Trainer is attached (the hand loop)
NO_TRAINER_LOG_WARNING = "You are trying to `self.log()` but the `self.trainer` reference is not registered"


@dataclass
class TaskResult:
    """img/s of the three measurements (median over repeats, and each repeat) for one task."""

    task: str
    model: str = ""
    input_shape: list[int] = field(default_factory=list)
    batch_size: int = 0
    precision: str = ""
    num_workers: int | str = 0
    augment: bool = False
    gpu_augment: bool = False
    bound: float = float("nan")
    real: float = float("nan")
    loop: float = float("nan")
    repeats: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def pipeline_efficiency(self) -> float:
        """real / bound: how close the whole pipeline gets to the model's own speed."""
        return self.real / self.bound

    @property
    def framework_overhead(self) -> float:
        """real / loop: Lightning and the framework against a hand-written loop (1.0 = free)."""
        return self.real / self.loop

    @property
    def paired_overheads(self) -> list[float]:
        """real / loop of each repeat: the two run back to back, so a slow phase of a shared machine
        touches both and cancels out of the ratio more than out of the medians."""
        return [
            r / c for r, c in zip(self.repeats.get("real", []), self.repeats.get("loop", []), strict=False)
        ]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.skipped is None:
            out["pipeline_efficiency"] = self.pipeline_efficiency
            out["framework_overhead"] = self.framework_overhead
            out["paired_overheads"] = self.paired_overheads
        return out


def task_settings(task: str, settings: Settings, run_dir: Path) -> tuple[DictConfig, str]:
    """The task's config with the benchmark's trainer, batch size and overrides applied."""
    overrides = [f"trainer={settings.trainer}", *settings.overrides]
    if settings.batch_size is not None:
        overrides.append(f"data.batch_size={settings.batch_size}")
    return compose_task(task, overrides, run_dir)


# ---- one task ---------------------------------------------------------------------------------------------
def measure_task(task: str, settings: Settings, log: Callable[[str], None] = print) -> TaskResult:
    """The three measurements of `task`, `settings.repeats` times each, interleaved."""
    with tempfile.TemporaryDirectory(prefix=f"visionlab_bench_{task}_") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(NO_TRAINER_LOG_WARNING))
        cfg, model_name = task_settings(task, settings, Path(tmp) / "run")
        try:
            task_classes(cfg)
        except ConfigError as err:  # e.g. a task whose module needs a package that is not installed
            return TaskResult(task, skipped=str(err))
        device = device_of(cfg)
        apply_torch_flags(cfg)
        if cfg.get("seed") is not None:
            pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        datamodule = build_datamodule(cfg)

        # (a) and (c) share one module and optimizer; (b) builds its own per repeat, as a run does.
        module = build_module(cfg, datamodule).to(device).train()
        if hasattr(module, "apply_freeze"):
            module.apply_freeze()
        step = TrainStep(module, cfg.trainer.precision, device)
        sample = prepare(module, next(iter(datamodule.train_dataloader())), device, datamodule)
        resident = random_like(sample)

        result = TaskResult(
            task,
            model=model_name,
            input_shape=list(next(t for t in _tensors(resident) if t.ndim == 4).shape[1:]),
            batch_size=batch_size(resident),
            precision=str(cfg.trainer.precision),
            num_workers=cfg.data.get("num_workers", 0),
            augment=bool(cfg.data.get("augment")),
            gpu_augment=bool(cfg.data.get("gpu_augment")),
            repeats={"bound": [], "real": [], "loop": []},
        )
        for repeat in range(settings.repeats):
            result.repeats["bound"].append(time_bound(step, resident, settings, device))
            # real and loop swap places every repeat, so neither always runs right after the other
            for kind in ("real", "loop") if repeat % 2 == 0 else ("loop", "real"):
                if kind == "real":
                    rate = time_trainer(cfg, datamodule, settings, repeat)
                else:  # a loader of its own per repeat, as one per fit in (b); its workers end with the call
                    rate = time_loop(step, datamodule, datamodule.train_dataloader(), settings, device)
                result.repeats[kind].append(rate)
            log(
                f"{task} repeat {repeat + 1}/{settings.repeats}: "
                + ", ".join(f"{k} {v[-1]:,.1f} img/s" for k, v in result.repeats.items())
            )
        for kind, values in result.repeats.items():
            setattr(result, kind, statistics.median(values))
        del module, step, datamodule
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _tensors(batch: Any) -> Iterable[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, (list, tuple, dict)):
        for item in batch.values() if isinstance(batch, dict) else batch:
            yield from _tensors(item)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


# ---- reporting --------------------------------------------------------------------------------------------
def markdown_table(results: Sequence[TaskResult]) -> str:
    """img/s of (a), (b), (c) and the two ratios, one row per task."""
    header = ["task", "model", "input", "batch", "precision", "workers", "augment",
              "(a) bound img/s", "(b) real img/s", "(c) loop img/s",
              "b/a pipeline efficiency", "b/c framework overhead", "b/c per repeat: median [min-max]"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 7 + ["---:"] * 6) + "|"]
    for r in results:
        if r.skipped is not None:
            lines.append(f"| {r.task} | skipped: {r.skipped} |" + " |" * (len(header) - 2))
            continue
        cells = [r.task, r.model, "x".join(map(str, r.input_shape)), str(r.batch_size), r.precision,
                 str(r.num_workers), augment_where(r),
                 _rate(r.bound), _rate(r.real), _rate(r.loop),
                 f"{r.pipeline_efficiency:.2f}", f"{r.framework_overhead:.2f}", _spread(r.paired_overheads)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def augment_where(result: TaskResult) -> str:
    """Where the training augmentation runs: cpu (Albumentations), gpu (kornia), both, or no."""
    where = [name for name, on in (("cpu", result.augment), ("gpu", result.gpu_augment)) if on]
    return "+".join(where) or "no"


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def run(
    tasks: Sequence[str],
    settings: Settings,
    log: Callable[[str], None] = print,
    keep_going: bool = False,
    on_result: Callable[[list[TaskResult]], None] | None = None,
) -> list[TaskResult]:
    """Measure every task in `tasks`; a task whose code does not import is skipped with a note, and with
    `keep_going` so is one that fails (its error in the note). `on_result` sees the results after each task."""
    results = []
    for task in tasks:
        log(f"--- {task}")
        try:
            results.append(measure_task(task, settings, log))
        except Exception as err:
            if not keep_going:
                raise
            results.append(TaskResult(task, skipped=f"failed: {type(err).__name__}: {err}"[:300]))
        if results[-1].skipped:
            log(f"{task} skipped: {results[-1].skipped}")
        if on_result is not None:
            on_result(results)
    return results


def report(results: Sequence[TaskResult], settings: Settings, command: str) -> dict[str, Any]:
    """The JSON document of a benchmark run."""
    device = torch.device("cuda") if settings.trainer == "gpu" else torch.device("cpu")
    return {
        **environment(device),
        "peak_rss_mib": peak_rss_mib(),
        "command": command,
        "settings": asdict(settings),
        "tasks": {r.task: r.as_json() for r in results},
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: Hydra overrides for every task (data.num_workers=8), or for one task "
        "(pose:experiment=pose_augmented)",
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: all)")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them (>= 1)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per kind; the median is kept")
    parser.add_argument("--batch-size", type=int, default=None, help="data.batch_size (default: the task's)")
    parser.add_argument("--trainer", choices=["gpu", "cpu"], default=Settings().trainer,
                        help="trainer config (default: gpu when CUDA is available)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="write the results as JSON here (rewritten after each task)")  # fmt: skip
    parser.add_argument("--keep-going", action="store_true",
                        help="a task that fails is reported as skipped with its error; the others still run")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as err:
        parser.error(str(err))
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be at least 1")
    if args.trainer == "gpu" and not torch.cuda.is_available():
        parser.error("--trainer gpu but no CUDA device is visible; use --trainer cpu")

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # validation is off, so best.ckpt cannot find its metric; last.ckpt is still written per epoch
    warnings.filterwarnings("ignore", message=re.escape("`ModelCheckpoint(monitor="))
    settings = Settings(args.steps, args.warmup, args.repeats, args.batch_size, args.trainer, args.overrides)
    command = "python -m benchmarks.throughput " + shlex.join(argv)

    def write(results: list[TaskResult]) -> None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report(results, settings, command), indent=2))

    results = run(
        tasks, settings, lambda text: print(text, file=sys.stderr, flush=True), args.keep_going, write
    )
    doc = report(results, settings, command)
    print(f"\n{doc['device']}, torch {doc['torch']}, lightning {doc['lightning']}, {doc['date']}")
    print(f"`{command}`\n")
    print(markdown_table(results))
    if args.out is not None:
        write(results)
        print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
