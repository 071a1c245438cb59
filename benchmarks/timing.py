"""The three timed paths of `benchmarks.throughput`: (a) the training step alone on a resident batch,
(b) a Lightning fit with the real loggers and callbacks, (c) a hand-written loop over the same
DataLoader; and the step, batch and clock pieces they share."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from benchmarks.common import device_of
from datamodules.contract import gpu_augmented
from visionlab.callbacks import run_callbacks
from visionlab.runner import build_loggers, build_module, build_trainer


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
    callbacks = [*run_callbacks(cfg), ClockCallback(clock)]
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
