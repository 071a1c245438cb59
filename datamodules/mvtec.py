"""MVTec AD category folders for `defect`: train on `train/good`, validate on held-out good images
(optionally plus a seeded share of each defect type), test on the rest of `test/`.

Three stages: *load* decodes each image once, resizes it to `image_size` x `image_size` (masks with
nearest neighbour) and caches it as uint8; *augment* runs the Albumentations pipeline on good training
images only; *normalise* (uint8 -> float in [0, 1], no mean/std: the autoencoder's sigmoid output
lives in [0, 1]) happens on the device in `DefectTask`.

Each sample is `(image uint8 (H, W, 3), mask uint8 (H, W) 0/1, type index)`, type index 0 = "good"
and k = `defect_types[k - 1]`. `on_bad_file=skip` leaves out the samples whose image or mask cannot be
decoded, or whose mask has another size than its image (see `datamodules.mvtec_format`).

Thresholds need data that is not the test set. Validation always holds `val_fraction` of
`train/good`; with only good images there, a threshold can only be a high quantile of good-pixel
scores. `val_defect_fraction` moves a seeded share of each defect type's test images (with their
masks) into validation, so the F1-optimal threshold and image-level metrics can be fitted and
followed per epoch there; those images leave the test set. `null` = 0.25 for the embedded set and
0 for `root` (real MVTec keeps its full, official test set unless you ask otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field
from torch.utils.data import Dataset

from datamodules.common import SplitDataModule, decode_all, keep_decoded
from datamodules.gpu_augment import build_gpu_augment
from datamodules.io import read_image
from datamodules.mvtec_format import (
    GOOD,
    MVTecCategory,
    MVTecSample,
    index_category,
    read_mask,
    split_train_val,
)
from datamodules.settings import ImageSettings
from datamodules.synthetic.mvtec import generate_mvtec
from datamodules.transforms import SeededAugment, build_augment

log = logging.getLogger(__name__)

#: share of each defect type moved into validation when `val_defect_fraction` is null and root is null
EMBEDDED_VAL_DEFECT_FRACTION = 0.25


def load_image(path: Path, size: int) -> np.ndarray:
    """Decode `path` to RGB (grey categories are replicated) and resize it to `size` x `size` (bilinear,
    antialiased). The whole field of view is kept: MVTec images are square, and a crop could cut a defect."""
    image = read_image(path, "RGB")
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    return image


def load_mask(sample: MVTecSample, size: int) -> np.ndarray:
    """The sample's mask (`> 0`) as uint8 0/1, resized with nearest neighbour; zeros for a good image."""
    mask = read_mask(sample, (size, size)).astype(np.uint8)
    if mask.shape != (size, size):
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return mask


class MVTecDataset(Dataset):
    """(image, mask, type index) triples; decoded once into memory when `cache` is true."""

    def __init__(
        self,
        samples: Sequence[MVTecSample],
        type_names: Sequence[str],
        image_size: int,
        augment: SeededAugment | None,
        cache: bool | str,
    ) -> None:
        self.samples = list(samples)
        self.type_names = list(type_names)
        self.types = torch.tensor(
            [self.type_names.index(s.defect_type) for s in self.samples], dtype=torch.long
        )
        self.image_size = image_size
        self.augment = augment
        self.images: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        if keep_decoded(cache, len(self.samples), image_size * image_size * 4):  # RGB + mask bytes
            self.images = decode_all([s.image for s in self.samples], self._load_image)
            self.masks = decode_all(self.samples, self._load_mask)

    def _load_image(self, path: Path) -> np.ndarray:
        return load_image(path, self.image_size)

    def _load_mask(self, sample: MVTecSample) -> np.ndarray:
        return load_mask(sample, self.image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        if self.images is not None and self.masks is not None:
            image, mask = self.images[index], self.masks[index]
        else:
            image, mask = self._load_image(sample.image), self._load_mask(sample)
        if self.augment is not None:
            # Only good images are augmented (training), so the all-zero mask needs no transform.
            image = self.augment(image=image)["image"]
        return (
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(np.ascontiguousarray(mask)),
            self.types[index],
        )


class MVTecSettings(ImageSettings):
    """`data.*` of `defect`: how many good training images and defect images validation holds."""

    cache_images: bool | Literal["auto"] = Field(True, description="true, false or auto")
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="in (0, 1): held-out good training images are needed to follow the "
        "reconstruction error and fit the threshold",
    )
    val_defect_fraction: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="a fraction in [0, 1) (share of each defect type's test images moved into "
        "validation), or null for the default",
    )


class MVTecDataModule(SplitDataModule[MVTecSettings]):
    """One MVTec AD category; `root=None` uses the embedded synthetic hazelnut set under `data_dir`."""

    empty_split_hint = "check data.val_fraction and the category's test/ folders"

    generate = staticmethod(generate_mvtec)

    def configure(self) -> None:
        s = self.settings
        default_defects = EMBEDDED_VAL_DEFECT_FRACTION if self.root is None else 0.0
        self.val_defect_fraction = default_defects if s.val_defect_fraction is None else s.val_defect_fraction
        self.augment = build_augment(s.augment)
        # training images are all good (empty masks), so only the images need transforming
        self.gpu_augment = build_gpu_augment(s.gpu_augment, image_shape=(s.image_size, s.image_size, 3))
        self.synthetic_root = self.data_dir / "mvtec_synthetic" / "hazelnut"
        self.category: MVTecCategory | None = None
        self.splits: dict[str, list[MVTecSample]] = {}

    @property
    def type_names(self) -> list[str]:
        """Type index -> name: "good" first, then the category's defect types (sorted folder names)."""
        assert self.category is not None, "call setup() first"
        return [GOOD, *self.category.defect_types]

    def setup(self, stage: str | None = None) -> None:
        if self.category is not None:
            return
        self.category = index_category(self.resolved_root, self.skip_bad_files)
        self.splits = split_category(
            self.category, self.settings.val_fraction, self.val_defect_fraction, self.settings.split_seed
        )
        for split, samples in self.splits.items():
            augment = self.augment if split == "train" else None
            self.datasets[split] = MVTecDataset(
                samples, self.type_names, self.settings.image_size, augment, self.settings.cache_images
            )
        log.info(
            "%s: defect types %s; images per split %s",
            self.resolved_root,
            self.category.defect_types,
            {s: len(d) for s, d in self.datasets.items()},
        )

    def info(self) -> dict[str, Any]:
        """Stored in the model's hyperparameters: defect types, input size, and what validation holds."""
        assert self.category is not None, "call setup() first"
        return {
            "defect_types": list(self.category.defect_types),
            "image_size": self.settings.image_size,
            "root": str(self.resolved_root),
            "val_has_defects": any(s.label for s in self.splits["val"]),
        }


def split_category(
    category: MVTecCategory, val_fraction: float, val_defect_fraction: float, seed: int
) -> dict[str, list[MVTecSample]]:
    """train = `train/good` minus a seeded `val_fraction`; val = those good images plus a seeded
    `val_defect_fraction` of each defect type's test images; test = the remaining test images.

    Each defect type draws from its own seed stream, so adding a type does not reshuffle the others;
    a type keeps at least one image in test. `test/good` always stays in test.
    """
    train, val = split_train_val(category.train, val_fraction, seed)
    test = [s for s in category.test if s.defect_type == GOOD]
    for k, defect in enumerate(category.defect_types, start=1):
        of_type = [s for s in category.test if s.defect_type == defect]
        if len(of_type) > 1 and val_defect_fraction > 0:
            kept, moved = split_train_val(of_type, val_defect_fraction, seed + 1000 * k)
        else:
            kept, moved = of_type, []
        test += kept
        val += moved
    return {"train": train, "val": val, "test": test}
