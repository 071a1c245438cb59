"""Callbacks of the framework, and the `callbacks` group built from the `_target_` of each entry of
`conf/callbacks/*.yaml` (any allowed Callback class: `+callbacks.<name>._target_=...`)."""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar, RichProgressBar
from lightning.pytorch.utilities.model_helpers import is_overridden

from tasks.base import plain
from visionlab.cli import log_to_files
from visionlab.targets import build_entries, check_entries, resolve_class

log = logging.getLogger(__name__)


class EpochTimer(Callback):
    """Logs `time/epoch_s`: wall time of each training epoch (validation excluded)."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("time/epoch_s", time.perf_counter() - self._start, on_epoch=True, on_step=False)


class LearningRates(LearningRateMonitor):
    """Lightning's LearningRateMonitor with every value in one `lr/` group of TensorBoard's SCALARS
    (`lr/AdamW`, `lr/AdamW/head`, ...) instead of one `lr-<optimizer class>` group per optimizer."""

    def _extract_stats(self, trainer: pl.Trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        renamed: dict[str, float] = {}
        for key, value in stats.items():
            new = "lr/" + key.removeprefix("lr-") if key.startswith("lr-") else key
            renamed[new] = value
            if new != key and key in trainer.callback_metrics:
                trainer.callback_metrics[new] = trainer.callback_metrics.pop(key)
        return renamed


class EpochLog(Callback):
    """Writes one line per training epoch into the run's log file (`train.log`): the epoch, its wall
    time and the epoch's summary metrics (train/*, val/*, time/*, lr; per-class values stay in
    TensorBoard and metrics.json), so the log alone tells how the run went. Lightning calls a
    callback's `on_train_epoch_end` before the module's, so the line is written at the next epoch's
    start (or the end of training), once what the module logs at its epoch end is there too."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        #: (epoch, seconds) of the finished epoch whose line is not written yet
        self._pending: tuple[int, float] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._pending = (trainer.current_epoch, time.perf_counter() - self._start)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_pending(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._write_pending(trainer)

    def _write_pending(self, trainer: pl.Trainer) -> None:
        """The line of the last finished epoch, if it is not written yet."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        epoch, seconds = pending
        values = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if v.numel() == 1 and (k.count("/") <= 1 or k.startswith("lr/")) and not k.endswith("_step")
        }
        shown = "  ".join(f"{k}={values[k]:.4g}" for k in sorted(values))
        log_to_files(logging.INFO, f"epoch {epoch + 1}/{trainer.max_epochs} ({seconds:.1f} s): {shown}")


class EpochReseed(Callback):
    """Seeds torch's global RNG (dropout, random ops in the model) from (run seed, epoch) at the start of
    every training epoch, so a run resumed from an epoch's checkpoint continues exactly as it would have
    without the interruption. The run seed is torch's seed when fitting starts (`seed=...`)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._base = torch.initial_seed()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.manual_seed((self._base * 1_000_003 + 7919 * (trainer.current_epoch + 1)) % 2**63)


#: an allowed callback class, for messages
EXAMPLE = "lightning.pytorch.callbacks.StochasticWeightAveraging"


def check_callbacks(specs: Mapping[str, Any] | None) -> None:
    """Refuse, before any data work, a `callbacks.<name>` entry whose `_target_` is not an allowed
    Callback class or whose keys the class does not take."""
    check_entries("callbacks", specs, Callback, EXAMPLE)


def build_callbacks(specs: Mapping[str, Any] | None, progress_bar: bool = True) -> list[Callback]:
    """One callback per non-null entry of `callbacks` (resolved values), built from its `_target_`.
    A progress-bar entry is left out unbuilt without `progress_bar` (Lightning refuses a bar callback
    with trainer.enable_progress_bar=false), and a Rich one where `rich` is not installed (a bare GPU
    machine): Lightning's own default bar takes its place, with a warning."""
    kept = {name: entry for name, entry in (specs or {}).items() if _kept(name, entry, progress_bar)}
    return build_entries("callbacks", kept, Callback, EXAMPLE)


#: the hooks Lightning calls on every callback once per batch (training step: six of them)
BATCH_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_unused_batch_hooks(callback: Callback) -> None:
    """Set the per-batch hooks that `callback`'s class does not override to None on the instance:
    Lightning calls only callable hooks, so it no longer dispatches the base class's no-ops (each a
    profiler context and, for a ModelCheckpoint, a formatted state key) on every step."""
    for name in BATCH_HOOKS:
        if not is_overridden(name, callback, Callback):
            setattr(callback, name, None)


def run_callbacks(cfg: Any) -> list[Callback]:
    """The run's callbacks: `cfg.callbacks` built, the bar as `trainer.enable_progress_bar` says."""
    return build_callbacks(plain(cfg.get("callbacks")), bool(cfg.trainer.get("enable_progress_bar", True)))


def _kept(name: str, entry: Any, progress_bar: bool) -> bool:
    if not isinstance(entry, Mapping) or "_target_" not in entry:
        return True  # null entries and bad ones: build_entries skips or refuses them by name
    target = resolve_class(f"callbacks.{name}._target_", entry["_target_"], Callback, EXAMPLE)
    if not issubclass(target, ProgressBar):
        return True
    if progress_bar and issubclass(target, RichProgressBar) and importlib.util.find_spec("rich") is None:
        log.warning(
            f"callbacks.{name}: rich is not installed (pip install rich); Lightning's default bar is used"
        )
        return False
    return progress_bar
