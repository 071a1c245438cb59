"""MNIST IDX digits (and, for the transfer step, a class-per-folder symbol set) for `embed`.

The whole dataset is tiny (60,000 x 28 x 28 bytes = 47 MB for real MNIST), so the *load* stage reads
each IDX file once into one uint8 tensor (N, 28, 28, 1) held in memory; validation is a seeded
subset of the training file's indices, not a copy. *Augment* (optional, Albumentations per sample
on uint8) runs only when `data.augment` is set; without it a batch is one tensor index
(`__getitems__`), so the main process feeds the network faster than worker processes would. On a
GPU (`data.device_resident`) the whole set moves to the device once and batches are cut there
(`datamodules.common.DeviceBatches`); `data.gpu_augment` then augments them on the device.
*Normalise* (MNIST mean/std) happens on the device in `EmbedTask.prepare_batch`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator
from torch.utils.data import Dataset

from datamodules.common import DeviceBatches, SplitDataModule
from datamodules.gpu_augment import build_gpu_augment
from datamodules.idx import MNIST_HELP, read_mnist
from datamodules.settings import NormalisedSettings
from datamodules.symbols import MNIST_MEAN, MNIST_STD, SymbolTransform, load_symbols
from datamodules.synthetic.mnist import generate_mnist
from datamodules.transforms import SeededAugment, build_augment
from visionlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
DIGITS = [str(d) for d in range(10)]
#: keys of `symbols.transform` (mean/std come from `data.mean` / `data.std`)
TRANSFORM_KEYS = ("scale", "crop", "interpolation", "invert")


class DigitDataset(Dataset):
    """(uint8 image (28, 28, 1), label) pairs: `indices` into one shared image tensor."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None = None,
        augment: SeededAugment | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.indices = torch.arange(len(images)) if indices is None else indices
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[index])
        image = self.images[i]
        if self.augment is not None:
            out = self.augment(image=image.numpy())["image"]
            image = torch.from_numpy(np.ascontiguousarray(out).reshape(image.shape))
        return image, self.labels[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A whole batch with one tensor index (DataLoader uses this when it exists)."""
        if self.augment is not None:
            return [self[i] for i in indices]
        rows = self.indices[torch.as_tensor(indices, dtype=torch.long)]
        return list(zip(self.images[rows].unbind(0), self.labels[rows].unbind(0), strict=True))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (N, 28, 28, 1) uint8 and labels (N,) of this split, un-augmented, in order."""
        return self.images[self.indices], self.labels[self.indices]


class MNISTSettings(NormalisedSettings):
    """`data.*` of `embed`: the validation share of the training file, where batches live, and the
    symbol folders of the transfer step."""

    channels: ClassVar[int] = 1
    batch_size: PositiveInt = Field(64, description="a positive integer")
    mean: list[float] = Field([MNIST_MEAN], description="one number (grayscale)")
    std: list[float] = Field([MNIST_STD], description="one positive number (grayscale)")
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="a number between 0 and 1 (exclusive): the share of the training file held out "
        "for validation",
    )
    device_resident: bool | Literal["auto"] = Field("auto", description="true, false or auto")
    symbols_train: str | None = Field(None, description="a class-per-folder path or null")
    symbols_test: str | None = Field(None, description="a class-per-folder path or null")
    symbol_transform: dict[str, Any] | None = Field(
        None, description=f"a mapping with some of {list(TRANSFORM_KEYS)}"
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> MNISTSettings:
        if self.device_resident is True and self.augment:
            raise ValueError(
                "data.device_resident=true cannot run data.augment (Albumentations works per sample on the "
                "CPU): move the transforms to data.gpu_augment (kornia, on the device) or set "
                "data.device_resident=false"
            )
        if self.symbols_test is not None and self.symbols_train is None:
            raise ValueError("transfer.test is set but transfer.train is not; give the folder to train on")
        return self


class MNISTDataModule(SplitDataModule[MNISTSettings]):
    """MNIST IDX files from `root` (or torchvision's `MNIST/raw`); `root=None` = embedded digits.

    With `symbols_train` set (the transfer step, see docs/embed.md) it serves that class-per-folder
    symbol set instead: train and val = `symbols_train`, test = `symbols_test` (or the train folder
    when none is given), each image put through the course's symbol transform and stored as uint8.
    """

    empty_split_hint = "check data.val_fraction and the IDX files"

    generate = staticmethod(generate_mnist)

    def configure(self) -> None:
        s = self.settings
        self.augment = build_augment(s.augment)
        self.gpu_augment = build_gpu_augment(s.gpu_augment, image_shape=(28, 28, 1))
        self.device_resident = s.device_resident
        self._resident: dict[str, list[torch.Tensor]] = {}
        self.symbols_train = Path(s.symbols_train).expanduser() if s.symbols_train else None
        self.symbols_test = Path(s.symbols_test).expanduser() if s.symbols_test else None
        self.symbol_transform = symbol_transform_from_config(s.symbol_transform, 0.0, 1.0)
        # skip applies to the symbol folders only: an IDX file is the whole data set and always raises
        self.synthetic_root = self.data_dir / "mnist_synthetic"
        self.class_names: list[str] = []

    @property
    def serves_symbols(self) -> bool:
        return self.symbols_train is not None

    def prepare_data(self) -> None:
        """The embedded digits, generated in the main process once (the generator uses a process pool);
        nothing to generate when the symbol folders are served."""
        if not self.serves_symbols:
            super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.serves_symbols:
            self._setup_symbols()
        else:
            self._setup_digits()
        sizes = {s: len(d) for s, d in self.datasets.items()}
        log.info("%s: %d classes, images per split %s", self.source, len(self.class_names), sizes)

    @property
    def source(self) -> Path:
        return self.symbols_train if self.symbols_train is not None else self.resolved_root

    def _setup_digits(self) -> None:
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"data.root={self.root} does not exist or is not a folder; {MNIST_HELP}")
        train_images, train_labels = read_mnist(self.resolved_root, "train")
        test_images, test_labels = read_mnist(self.resolved_root, "test")
        n_val = round(len(train_images) * self.settings.val_fraction)
        if n_val < 1 or n_val >= len(train_images):
            raise DataError(
                f"{self.resolved_root}: {len(train_images)} training images leave no train/val split at "
                f"data.val_fraction={self.settings.val_fraction}; use more images or another fraction"
            )
        if not len(test_images):
            raise DataError(f"{self.resolved_root}: the t10k (test) file holds no images")
        order = torch.from_numpy(
            np.random.default_rng(self.settings.split_seed).permutation(len(train_images))
        )
        images = torch.from_numpy(train_images).unsqueeze(-1)  # (N, 28, 28, 1): HWC as the workers yield
        labels = torch.from_numpy(train_labels)
        self.class_names = list(DIGITS)
        self.datasets = {
            "train": DigitDataset(images, labels, order[n_val:].sort().values, self.augment),
            "val": DigitDataset(images, labels, order[:n_val].sort().values),
            "test": DigitDataset(torch.from_numpy(test_images).unsqueeze(-1), torch.from_numpy(test_labels)),
        }

    def _setup_symbols(self) -> None:
        assert self.symbols_train is not None
        train = load_symbols(self.symbols_train, self.symbol_transform, skip_bad_files=self.skip_bad_files)
        test = (
            load_symbols(self.symbols_test, self.symbol_transform, train.class_names, self.skip_bad_files)
            if self.symbols_test is not None
            else train
        )
        self.class_names = train.class_names

        def as_uint8(images: torch.Tensor) -> torch.Tensor:  # (N, 1, 28, 28) in [0, 1] -> (N, 28, 28, 1)
            return images.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

        # Validation re-reads the train folder (eval mode, no augmentation): a symbol set is too small to
        # split, and validating on the test folder would pick the best checkpoint on the test images.
        images, labels = as_uint8(train.images), train.labels
        self.datasets = {
            "train": DigitDataset(images, labels, augment=self.augment),
            "val": DigitDataset(images, labels),
            "test": DigitDataset(as_uint8(test.images), test.labels),
        }

    def training_device(self) -> torch.device:
        """The device the trainer trains on; without a trainer (a hand-written loop) the first CUDA
        device when there is one, as `trainer.accelerator=auto` would pick."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")

    def resident(self) -> bool:
        """Whether batches come from tensors on the training device (`data.device_resident`; auto =
        on a CUDA device when no CPU augmentation is configured)."""
        if self.device_resident == "auto":
            return self.augment is None and self.training_device().type == "cuda"
        return bool(self.device_resident)

    def loader(self, split: str, shuffle: bool = False) -> Any:
        """A DataLoader, or with `resident()` the whole split on the device cut into batches there."""
        if not self.resident():
            return super().loader(split, shuffle)
        dataset = self.checked_dataset(split)
        device = self.training_device()
        if split not in self._resident or self._resident[split][0].device != device:
            self._resident[split] = [t.to(device) for t in dataset.tensors()]
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        drop_last = shuffle and len(dataset) > self.batch_size
        return DeviceBatches(self._resident[split], self.batch_size, shuffle, drop_last, rank, world)

    def info(self) -> dict[str, Any]:
        """What the model must know about the data (stored in its hyperparameters)."""
        assert self.datasets, "call setup() first"
        return {
            "class_names": list(self.class_names),
            "mean": self.settings.mean,
            "std": self.settings.std,
            "image_size": 28,
            "source": "symbols" if self.serves_symbols else "digits",
            "root": str(self.source),
        }

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """All uint8 images (N, 28, 28, 1) and labels of `split`, for figures and the projector."""
        return self.datasets[split].tensors()


def symbol_transform_from_config(
    cfg: dict[str, Any] | None, mean: float = MNIST_MEAN, std: float = MNIST_STD
) -> SymbolTransform:
    """`symbols.transform` ({scale, crop, interpolation, invert}) with the given normalisation."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(TRANSFORM_KEYS))
    if unknown:
        raise ConfigError(
            f"symbols.transform has unknown keys {unknown}; expected some of {list(TRANSFORM_KEYS)} "
            "(the normalisation is data.mean / data.std)"
        )
    try:
        return SymbolTransform(**cfg, mean=mean, std=std)
    except TypeError as err:
        raise ConfigError(f"symbols.transform: {err}") from None
