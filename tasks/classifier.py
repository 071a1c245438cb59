"""What the two image classifiers (finetune, embed) share: batches of (images, labels), the training
step and the epoch's training accuracy, logged once per epoch."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import MulticlassAccuracy

from tasks.base import TaskModule


class ClassifierTask(TaskModule):
    """A TaskModule whose network maps normalised images to class scores. Subclasses set
    `self.train_acc` in their constructor and define `classification_loss`."""

    train_acc: MulticlassAccuracy

    def classification_loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of the network's `outputs` (logits, or log-probabilities) for `labels`."""
        raise NotImplementedError

    def prepare_batch(self, batch: Any) -> Any:
        """(normalised images, labels, the raw uint8 images for figures)."""
        images, labels = batch
        return self.normalize(images), labels, images

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _ = batch
        outputs = self(x)
        loss = self.classification_loss(outputs, y)
        self.train_acc.update(outputs, y)
        self.log_train_loss(loss, y.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        """The epoch's training loss and accuracy, logged once (no per-step `self.log`)."""
        super().on_train_epoch_end()
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()
