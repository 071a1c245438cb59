"""Class-per-folder images (`root/<split>/<class>/*.png` or `root/<class>/*.png`) for `finetune`.

Three stages: *load* decodes and resizes once (cached in memory by default), *augment* runs the
Albumentations pipeline per sample on uint8 HWC, *normalise* happens on the device in the
LightningModule (`TaskModule.normalize`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, field_validator
from torch.utils.data import Dataset

from datamodules.common import SplitDataModule, decode_all, keep_decoded, readable_items
from datamodules.gpu_augment import build_gpu_augment
from datamodules.io import list_images, read_image
from datamodules.settings import ImageSettings, NormalisedSettings
from datamodules.synthetic import synthetic_folder
from datamodules.synthetic.shapes import check_classes, generate_shapes, subset_tag
from datamodules.transforms import SeededAugment, build_augment, resize_short_side_center_crop
from visionlab.errors import DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class FolderIndex:
    """Class names (sorted folder names) and, per split, image paths with their class indices."""

    class_names: list[str]
    samples: dict[str, list[tuple[Path, int]]]


def index_class_folders(
    root: Path, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> FolderIndex:
    """Index `root`: split folders are used as they are; a split missing (or a root of class folders
    only) is carved from train per class by `fractions`, with `seed`, so the split is reproducible."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist or is not a folder; expected <root>/<class>/*.png "
            "or <root>/{train,val,test}/<class>/*.png"
        )
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and "train" not in present:
        raise DataError(f"{root} has {present} but no train/ folder")
    base = root / "train" if present else root
    class_names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise DataError(f"{base} has no class folders; expected {base}/<class>/*.png")
    if len(class_names) == 1:
        only = base / class_names[0]
        count = sum(1 for p in only.iterdir() if p.is_file() and not p.name.startswith("."))
        raise DataError(
            f"{base} has one class folder, {class_names[0]}/ ({count} files); a classifier needs at least 2: "
            f"put each class's images in its own folder, {base}/<class>/*.png"
        )
    samples = {s: _read_split(root / s if present else root, class_names) for s in (present or ["train"])}
    missing = [s for s in SPLITS if s not in samples]
    if missing:
        samples.update(_carve(samples["train"], len(class_names), fractions, missing, seed))
    return FolderIndex(class_names, samples)


def _read_split(folder: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and p.name not in class_names and not p.name.startswith(".")
    )
    if extra:
        raise DataError(
            f"{folder} has class folders {extra} that train/ does not have; the classes must match"
        )
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        images = list_images(class_dir)
        if not images:
            raise DataError(
                f"{class_dir} is an empty class folder (no .png/.jpg images); add images or remove it"
            )
        items += [(p, label) for p in images]
    return items


def _carve(
    train: list[tuple[Path, int]],
    num_classes: int,
    fractions: tuple[float, float, float],
    missing: list[str],
    seed: int,
) -> dict[str, list[tuple[Path, int]]]:
    """Move a stratified, seeded share of `train` into each missing split."""
    rng = np.random.default_rng(seed)
    shares = {s: fractions[SPLITS.index(s)] for s in missing}
    total = fractions[0] + sum(shares.values())
    out: dict[str, list[tuple[Path, int]]] = {s: [] for s in missing}
    kept: list[tuple[Path, int]] = []
    for label in range(num_classes):
        items = [it for it in train if it[1] == label]
        order = rng.permutation(len(items))
        start = 0
        for split, share in shares.items():
            count = round(len(items) * share / total)
            out[split] += [items[i] for i in order[start : start + count]]
            start += count
        kept += [items[i] for i in order[start:]]
    train[:] = kept
    return out


class ImageFolderDataset(Dataset):
    """(uint8 HWC image, class index) pairs; images from a decoded cache or decoded on access."""

    def __init__(
        self,
        items: list[tuple[Path, int]],
        image_size: int,
        augment: SeededAugment | None,
        cache: bool | str,
    ) -> None:
        self.paths = [p for p, _ in items]
        self.labels = torch.tensor([label for _, label in items], dtype=torch.long)
        self.load = functools.partial(load_resized, size=image_size)
        self.augment = augment
        keep = keep_decoded(cache, len(self.paths), image_size * image_size * 3)
        self.images = decode_all(self.paths, self.load) if keep else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index] if self.images is not None else self.load(self.paths[index])
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image)), self.labels[index]


def load_resized(path: Path, size: int) -> np.ndarray:
    """Decode `path` to RGB and resize-crop it to `size` x `size` (the *load* stage)."""
    return resize_short_side_center_crop(read_image(path, "RGB"), size)


class FolderSettings(ImageSettings, NormalisedSettings):
    """`data.*` of `finetune`: the input size and the split of a root without split folders."""

    image_size: PositiveInt = Field(64, description="a positive integer (pixels)")
    batch_size: PositiveInt = Field(64, description="a positive integer")
    cache_images: bool | Literal["auto"] = Field(True, description="true, false or auto")
    split_fractions: list[float] = Field(
        [0.7, 0.15, 0.15], description="[train, val, test] fractions >= 0 summing to 1"
    )

    @field_validator("split_fractions")
    @classmethod
    def _check_fractions(cls, values: list[float]) -> list[float]:
        if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(
                f"data.split_fractions={values} must be [train, val, test] fractions >= 0 summing to 1"
            )
        return values


class FolderDataModule(SplitDataModule[FolderSettings]):
    """Class-per-folder data; `root=None` uses the embedded 12-class set (or the classes of
    `synthetic["classes"]`) under `data_dir`."""

    empty_split_hint = "add test/ images or a test fraction (data.split_fractions)"

    generate = staticmethod(generate_shapes)

    def configure(self) -> None:
        s = self.settings
        self.fractions: tuple[float, float, float] = tuple(s.split_fractions)  # type: ignore[assignment]
        self.augment = build_augment(s.augment)
        self.gpu_augment = build_gpu_augment(s.gpu_augment, image_shape=(s.image_size, s.image_size, 3))
        # a class subset is passed on (and recorded in the marker) only when it is one: the full set's
        # parameters, and so its folder and marker, stay what they were before subsets existed
        classes = check_classes(self.synthetic.pop("classes", None))
        if classes is not None:
            self.synthetic["classes"] = classes
        self.synthetic_root = synthetic_folder(
            self.data_dir, "finetune_shapes", self.synthetic, subset_tag(classes)
        )
        self.index: FolderIndex | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        self.index = index_class_folders(self.resolved_root, self.fractions, self.settings.split_seed)
        if self.skip_bad_files:  # one pass over every split: one warning counts every unreadable image
            paths = [p for split in SPLITS for p, _ in self.index.samples[split]]
            readable = {paths[i] for i in readable_items(paths, read_image)}
            for items in self.index.samples.values():
                items[:] = [it for it in items if it[0] in readable]
        for split in SPLITS:
            augment = self.augment if split == "train" else None
            self.datasets[split] = ImageFolderDataset(
                self.index.samples[split], self.settings.image_size, augment, self.settings.cache_images
            )
        sizes = {s: len(d) for s, d in self.datasets.items()}
        log.info(
            "%s: %d classes, images per split %s", self.resolved_root, len(self.index.class_names), sizes
        )
        if not sizes["train"]:
            raise DataError(f"{self.resolved_root}: the train split is empty")

    def info(self) -> dict[str, Any]:
        """What the model must know about the data (stored in its hyperparameters)."""
        assert self.index is not None, "call setup() first"
        return {
            "class_names": self.index.class_names,
            "mean": self.settings.mean,
            "std": self.settings.std,
            "image_size": self.settings.image_size,
            "root": str(self.resolved_root),
        }
