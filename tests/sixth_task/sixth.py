"""A sixth task outside the project's tasks/ and datamodules/, as docs/adding-a-task.md describes it:
bright or dark 8x8 images, told apart by a tiny convolutional network."""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks.base import TaskArgs, TaskModule
from visionlab.errors import ConfigError
from visionlab.schema import ModelSettings

CLASS_NAMES = ["dark", "bright"]


class BrightnessData(pl.LightningDataModule):
    """Random uint8 images (N, H, W, 3), the `bright` ones lighter on average; made in memory from
    `seed`, so every run and evaluation sees the same splits."""

    def __init__(
        self,
        data_dir: str,
        num_images: int = 64,
        image_size: int = 8,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_images < 8:
            raise ConfigError(f"data.num_images={num_images!r} must be at least 8")
        self.num_images, self.image_size, self.seed = num_images, image_size, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str) -> None:
        if self.splits:
            return
        generator = torch.Generator().manual_seed(self.seed)
        labels = torch.arange(self.num_images) % 2
        base = torch.randint(
            0, 128, (self.num_images, self.image_size, self.image_size, 3), generator=generator
        )
        images = (base + 100 * labels.view(-1, 1, 1, 1)).to(torch.uint8)
        cut = self.num_images // 4
        self.splits = {
            "train": TensorDataset(images[2 * cut :], labels[2 * cut :]),
            "val": TensorDataset(images[:cut], labels[:cut]),
            "test": TensorDataset(images[cut : 2 * cut], labels[cut : 2 * cut]),
        }

    def info(self) -> dict[str, Any]:
        """What the module is built from (and stored in its checkpoints)."""
        return {"class_names": CLASS_NAMES, "image_size": self.image_size}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.splits[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class TinyConvModel(ModelSettings):
    """`model.*`: the width of the one convolution (typed: a wrong value is one error line)."""

    archs: ClassVar[tuple[str, ...]] = ("tinyconv",)
    task_label: ClassVar[str] = "sixth"
    channels: PositiveInt = Field(4, description="a positive integer")


class SixthTask(TaskModule):
    """Cross-entropy on two classes; `test/acc` is its test metric."""

    task_name = "sixth"
    monitor = "val/acc"
    summary_metrics = ("test/acc",)
    #: model.* is checked by the inherited check_config before any data is made
    model_settings_class = TinyConvModel

    def __init__(self, **args: Unpack[TaskArgs]) -> None:
        super().__init__(**args)
        channels = TinyConvModel.parse(args["model"]).channels
        data_info = self.data_info
        classes = len(data_info.get("class_names") or CLASS_NAMES)
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(channels, classes),
        )  # fmt: skip
        self._correct, self._seen = 0, 0

    def prepare_batch(self, batch: Any) -> Any:
        images, labels = batch
        return self.normalize(images), labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log_train_loss(loss, y.shape[0])
        return loss

    def _count(self, batch: Any) -> None:
        x, y = batch
        self._correct += int((self.net(x).argmax(1) == y).sum())
        self._seen += int(y.shape[0])

    def _accuracy(self) -> float:
        value = self._correct / max(self._seen, 1)
        self._correct, self._seen = 0, 0
        return value

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._count(batch)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self._accuracy())

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._count(batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = {"test/acc": self._accuracy()}
        self.log_dict(self.test_results)
