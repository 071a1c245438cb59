"""The terminal's progress bar: Lightning's Rich bar, redrawn at a fixed rate instead of on every batch.

Lightning's `RichProgressBar` updates its task, reads the logged metrics (`.item()` of each, a device
sync on a GPU) and refreshes on every batch, and its display thread redraws 100 times a second. For a
small network on a 2-core CPU that cost about 8% of the training steps (benchmarks/README.md); a
person cannot read more than a few redraws a second, so this bar updates at most `updates_per_second`
times, and always on an epoch's last batch, so the finished bar and its metrics are exact.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar

from visionlab.errors import ConfigError


class SteadyProgressBar(RichProgressBar):
    """`RichProgressBar` that updates at most `updates_per_second` times a second (and on the last
    batch of every epoch or evaluation), redrawn by its display thread at the same rate."""

    def __init__(self, updates_per_second: float = 10.0, leave: bool = False) -> None:
        if not updates_per_second > 0:
            raise ConfigError(
                f"callbacks.progress_bar.updates_per_second={updates_per_second} must be a positive number"
            )
        super().__init__(refresh_rate=max(1, round(updates_per_second)), leave=leave)
        self.interval_s = 1.0 / updates_per_second
        self._last_update = float("-inf")

    def _due(self, batch_idx: int, total: float) -> bool:
        """Whether this batch updates the bar: the interval has passed, or it is the last batch."""
        now = time.monotonic()
        if batch_idx + 1 < total and now - self._last_update < self.interval_s:
            return False
        self._last_update = now
        return True

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # the epoch's own length: Lightning's total_train_batches shrinks with the steps left under max_steps
        if self.train_progress_bar_id is None or self._due(batch_idx, trainer.num_training_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
