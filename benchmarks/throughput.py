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
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

import datamodules  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
from datamodules.contract import gpu_augmented
from visionlab.callbacks import build_callbacks
from visionlab.errors import ConfigError
from visionlab.keys import tasks_available
from visionlab.runner import build_datamodule, build_loggers, build_module, build_trainer, task_classes

#: every task of the framework (one per conf/task/*.yaml), in the order the tables list them
TASKS = tuple(tasks_available())
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

#: what a task module's `self.log` says on every step when no Trainer is attached (the hand loop)
NO_TRAINER_LOG_WARNING = "You are trying to `self.log()` but the `self.trainer` reference is not registered"


@dataclass
class Settings:
    """What to measure and how long. `overrides` are Hydra overrides for every task, or for one task
    when written `<task>:<key>=<value>`."""

    steps: int = 50
    warmup: int = 10
    repeats: int = 3
    batch_size: int | None = None
    trainer: str = field(default_factory=lambda: "gpu" if torch.cuda.is_available() else "cpu")
    overrides: list[str] = field(default_factory=list)


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

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.skipped is None:
            out["pipeline_efficiency"] = self.pipeline_efficiency
            out["framework_overhead"] = self.framework_overhead
        return out


# ---- configuration ----------------------------------------------------------------------------------
def parse_tasks(text: str) -> list[str]:
    """`pose,defect` -> ["pose", "defect"]; an unknown name is a ValueError naming it."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"--tasks {text!r}: expected a comma-separated subset of {','.join(TASKS)}")
    return tasks


def overrides_for(task: str, overrides: Sequence[str]) -> list[str]:
    """The Hydra overrides that apply to `task`: plain ones apply to every task, `pose:key=value`
    only to the task named before the colon."""
    chosen = []
    for item in overrides:
        prefix, colon, rest = item.partition(":")
        if colon and prefix in TASKS and "=" in rest:
            if prefix == task:
                chosen.append(rest)
        else:
            chosen.append(item)
    return chosen


def compose_task(task: str, overrides: Sequence[str], run_dir: Path) -> tuple[DictConfig, str]:
    """The config `python train.py task=<task> <overrides>` would compose, writing into `run_dir`,
    and the name of the model config it chose (for the table)."""
    args = [f"task={task}", *overrides_for(task, overrides), f"paths.run_dir={run_dir}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=args, return_hydra_config=True)
    model = str(cfg.hydra.runtime.choices.get("model", "?"))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, model


def task_settings(task: str, settings: Settings, run_dir: Path) -> tuple[DictConfig, str]:
    """The task's config with the benchmark's trainer, batch size and overrides applied."""
    overrides = [f"trainer={settings.trainer}", *settings.overrides]
    if settings.batch_size is not None:
        overrides.append(f"data.batch_size={settings.batch_size}")
    return compose_task(task, overrides, run_dir)


def device_of(cfg: DictConfig) -> torch.device:
    """The device the Trainer built from `cfg.trainer` trains on."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def apply_torch_flags(cfg: DictConfig) -> None:
    """The global flags the Trainer sets (cudnn autotuning, determinism, matmul precision), so that
    the bound and the hand loop run under the same ones as the real path."""
    deterministic = cfg.trainer.get("deterministic")
    benchmark = cfg.trainer.get("benchmark")
    if deterministic and benchmark is None:
        benchmark = False
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)
    if isinstance(deterministic, bool):
        torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.set_float32_matmul_precision("high")


# ---- the pieces of a training step --------------------------------------------------------------------
def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor of a (nested) batch on `device`; asynchronous from pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def batch_size(batch: Any) -> int:
    """Length of the first tensor of a (nested) batch: the number of images it holds."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, dict) else batch
    for item in items:
        with contextlib.suppress(ValueError):
            return batch_size(item)
    raise ValueError("the batch holds no tensor")


def prepare(
    module: pl.LightningModule, batch: Any, device: torch.device, datamodule: Any = None, epoch: int = 0
) -> Any:
    """What Lightning does between the DataLoader and `training_step`: the module's hook before the
    transfer, the transfer, the data's augmentation on the device (`data.gpu_augment`), and the
    module's `prepare_batch` (normalisation on the device)."""
    batch = module.on_before_batch_transfer(batch, 0)
    batch = to_device(batch, device)
    return module.prepare_batch(gpu_augmented(datamodule, batch, epoch))


class TrainStep:
    """One optimisation step of `module` as Lightning's automatic optimisation runs it: the module's
    own `training_step` under the trainer's precision, backward, optimizer step, zero_grad."""

    def __init__(self, module: pl.LightningModule, precision: str, device: torch.device) -> None:
        self.module = module
        self.optimizer = first_optimizer(module.configure_optimizers())
        precision = str(precision)
        if precision in ("32-true", "32"):
            self.dtype: torch.dtype | None = None
        elif precision == "bf16-mixed":
            self.dtype = torch.bfloat16
        elif precision == "16-mixed":
            self.dtype = torch.float16
        else:
            raise ValueError(
                f"trainer.precision={precision}: the benchmark knows 32-true, bf16-mixed, 16-mixed"
            )
        self.device = device
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    def __call__(self, batch: Any, index: int) -> None:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.module.training_step(batch, index)
        loss = out["loss"] if isinstance(out, dict) else out
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)


def first_optimizer(configured: Any) -> torch.optim.Optimizer:
    """The optimizer out of whatever `configure_optimizers` returned (the schedulers step per epoch
    and cost nothing per step, so they are left out)."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured
    if isinstance(configured, dict):
        return configured["optimizer"]
    if isinstance(configured, (list, tuple)) and configured:
        return first_optimizer(configured[0])
    raise TypeError(f"configure_optimizers returned {type(configured).__name__}; expected an optimizer")


# ---- timing ---------------------------------------------------------------------------------------------
class StepClock:
    """Counts finished training steps and times those after the warm-up: the clock starts when step
    `warmup` has finished and stops when step `warmup + steps` has, synchronising the device at both
    ends, so the time includes fetching each measured batch."""

    def __init__(self, device: torch.device, warmup: int, steps: int) -> None:
        self.device, self.warmup, self.steps = device, warmup, steps
        self.finished = 0
        self.images = 0
        self.started = 0.0
        self.elapsed: float | None = None

    def step_done(self, images: int) -> None:
        self.finished += 1
        if self.finished > self.warmup:
            self.images += images
        if self.finished == self.warmup:
            self._sync()
            self.started = time.perf_counter()
        elif self.finished == self.warmup + self.steps:
            self._sync()
            self.elapsed = time.perf_counter() - self.started

    @property
    def done(self) -> bool:
        return self.elapsed is not None

    @property
    def images_per_second(self) -> float:
        if self.elapsed is None:
            raise RuntimeError(f"stopped after {self.finished} of {self.warmup + self.steps} steps")
        return self.images / self.elapsed

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class ClockCallback(Callback):
    """Feeds a StepClock from the Trainer's training loop."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.clock.step_done(batch_size(batch))


def time_bound(step: TrainStep, batch: Any, settings: Settings, device: torch.device) -> float:
    """(a) img/s of the training step alone, on one batch that stays on the device."""
    clock = StepClock(device, settings.warmup, settings.steps)
    images = batch_size(batch)
    for index in range(settings.warmup + settings.steps):
        step(batch, index)
        clock.step_done(images)
    return clock.images_per_second


def time_trainer(
    cfg: DictConfig, datamodule: pl.LightningDataModule, settings: Settings, repeat: int = 0
) -> float:
    """(b) img/s of a Lightning fit of a fresh module on the task's DataModule, with the trainer,
    loggers and callbacks of a real run (writing into `<cfg.paths.run_dir>/real_<repeat>`),
    validation switched off."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.run_dir = f"{cfg.paths.run_dir}/real_{repeat}"
        cfg.trainer.max_steps = settings.warmup + settings.steps
        cfg.trainer.max_epochs = -1
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
    clock = StepClock(device_of(cfg), settings.warmup, settings.steps)
    module = build_module(cfg, datamodule)
    callbacks = [*build_callbacks(_plain(cfg.get("callbacks"))), ClockCallback(clock)]
    trainer = build_trainer(cfg, callbacks, build_loggers(cfg))
    trainer.fit(module, datamodule=datamodule)
    return clock.images_per_second


def time_loop(
    step: TrainStep, datamodule: Any, loader: Iterable[Any], settings: Settings, device: torch.device
) -> float:
    """(c) img/s of a hand-written loop over the task's DataLoader (one pass per epoch, as long as needed)."""
    clock = StepClock(device, settings.warmup, settings.steps)
    module = step.module
    epoch = 0
    while not clock.done:
        for index, raw in enumerate(loader):
            batch = prepare(module, raw, device, datamodule, epoch)
            step(batch, index)
            clock.step_done(batch_size(batch))
            if clock.done:
                break
        epoch += 1
    return clock.images_per_second


def random_like(batch: Any) -> Any:
    """The batch with every float image tensor (N, C, H, W) replaced by random values of the same
    shape, dtype and memory format; labels and targets are kept, so they stay valid."""
    if isinstance(batch, torch.Tensor):
        return torch.randn_like(batch) if batch.is_floating_point() and batch.ndim == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(random_like(b) for b in batch)
    if isinstance(batch, dict):
        return {k: random_like(v) for k, v in batch.items()}
    return batch


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
            result.repeats["real"].append(time_trainer(cfg, datamodule, settings, repeat))
            loader = datamodule.train_dataloader()  # one loader per repeat, as one per fit in (b)
            result.repeats["loop"].append(time_loop(step, datamodule, loader, settings, device))
            del loader  # ends its persistent workers before the next measurement
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
def environment(device: torch.device) -> dict[str, Any]:
    """The machine and versions a measurement belongs to."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """`NVIDIA H100 80GB HBM3`, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores)"


def markdown_table(results: Sequence[TaskResult]) -> str:
    """img/s of (a), (b), (c) and the two ratios, one row per task."""
    header = ["task", "model", "input", "batch", "precision", "workers", "augment",
              "(a) bound img/s", "(b) real img/s", "(c) loop img/s",
              "b/a pipeline efficiency", "b/c framework overhead"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 7 + ["---:"] * 5) + "|"]
    for r in results:
        if r.skipped is not None:
            lines.append(f"| {r.task} | skipped: {r.skipped} |" + " |" * (len(header) - 2))
            continue
        cells = [r.task, r.model, "x".join(map(str, r.input_shape)), str(r.batch_size), r.precision,
                 str(r.num_workers), augment_where(r),
                 _rate(r.bound), _rate(r.real), _rate(r.loop),
                 f"{r.pipeline_efficiency:.2f}", f"{r.framework_overhead:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def augment_where(result: TaskResult) -> str:
    """Where the training augmentation runs: cpu (Albumentations), gpu (kornia), both, or no."""
    where = [name for name, on in (("cpu", result.augment), ("gpu", result.gpu_augment)) if on]
    return "+".join(where) or "no"


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


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB since it started (Linux `VmHWM`, which, unlike
    `ru_maxrss`, does not carry the parent's size over a fork and exec); None where unknown."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


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
