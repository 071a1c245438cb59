"""Leeds Sports Pose data (original LSP or LSPet, see `datamodules.lsp_format`) for the `pose` task.

Three stages:

* *load*: decode each image once and **letterbox** it to `image_size` x `image_size`: the longer
  side is resized to `image_size` (aspect kept), the shorter side is padded equally on both sides
  with `pad_value`. Joints get the same scale and offset. Cached in memory as uint8 by default.
* *augment*: an Albumentations pipeline from `data.augment` with keypoint support. Horizontal (and
  vertical / transpose) flips mirror the person, so the left/right joint rows are swapped with
  `LSP_FLIP_PERMUTATION` (joints and visibility) when an odd number of mirroring transforms fired.
  A joint pushed out of the frame keeps its row and becomes invisible.
* *normalise*: on the device, in the LightningModule.

Batches are `(images uint8 (N, S, S, 3), joints float32 (N, 14, 2) in pixels of the letterboxed
frame, visible bool (N, 14))`. Pixel coordinates are continuous (pixel (i, j) covers [j, j+1) x
[i, i+1), see `tasks.pose.geometry`); Albumentations uses pixel-centre-at-integer coordinates, so
joints are shifted by 0.5 px around the augmentation call.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from torch.utils.data import DataLoader, Dataset

from datamodules.common import SplitDataModule, decode_all, keep_decoded, make_loader
from datamodules.gpu_augment import build_gpu_augment
from datamodules.io import read_image
from datamodules.lsp_format import JOINT_NAMES, LSP_FLIP_PERMUTATION, LSPAnnotations, read_lsp, split_lsp
from datamodules.settings import ImageSettings, NormalisedSettings
from datamodules.synthetic import synthetic_folder
from datamodules.synthetic.lsp import generate_lsp
from datamodules.transforms import SeededAugment, build_augment
from visionlab.errors import DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
#: Albumentations transforms that mirror the image: an odd number of them swaps left and right
MIRRORING = frozenset({"HorizontalFlip", "VerticalFlip", "Transpose"})
_FLIP = np.asarray(LSP_FLIP_PERMUTATION)


def letterbox(image: np.ndarray, size: int, pad_value: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize the longer side to `size` keeping the aspect, pad the shorter side equally on both sides.

    Returns (uint8 (size, size, 3), scale (2,) x/y, offset (2,) x/y) such that a pixel point p of the
    original maps to p * scale + offset (continuous coordinates).
    """
    h, w = image.shape[:2]
    factor = size / max(h, w)
    nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    out = np.full((size, size, 3), pad_value, dtype=np.uint8)
    left, top = (size - nw) // 2, (size - nh) // 2
    out[top : top + nh, left : left + nw] = resized
    return out, np.array([nw / w, nh / h], np.float32), np.array([left, top], np.float32)


def letterbox_transform(sizes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale (N, 2) and offset (N, 2) that `letterbox` applies to images of (width, height) `sizes`."""
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    factor = size / sizes.max(axis=1, keepdims=True)
    new = np.maximum(1, np.round(sizes * factor))
    return (new / sizes).astype(np.float32), ((size - new) // 2).astype(np.float32)


class LSPDataset(Dataset):
    """Letterboxed images with joints (14, 2) px and visibility (14,), optionally augmented."""

    def __init__(
        self,
        paths: list[Path],
        joints: np.ndarray,
        visible: np.ndarray,
        sizes: np.ndarray,
        image_size: int,
        pad_value: int,
        augment: SeededAugment | None,
        cache: bool | str,
    ) -> None:
        self.paths, self.image_size, self.pad_value, self.augment = paths, image_size, pad_value, augment
        scale, offset = letterbox_transform(sizes, image_size)
        # joints in the letterboxed frame; the sizes come from the file headers (read_lsp)
        self.joints = (joints.astype(np.float32) * scale[:, None] + offset[:, None]).astype(np.float32)
        self.visible = visible.astype(bool)
        keep = keep_decoded(cache, len(paths), image_size * image_size * 3)
        self.images = decode_all(paths, self._load) if keep else None

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, path: Path) -> np.ndarray:
        image = read_image(path, "RGB")
        return letterbox(image, self.image_size, self.pad_value)[0]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 image (S, S, 3), joints (14, 2), visible (14,)) before augmentation."""
        image = self.images[index] if self.images is not None else self._load(self.paths[index])
        return image, self.joints[index], self.visible[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, joints, visible = self.sample(index)
        if self.augment is not None:
            image, joints, visible = augment_sample(self.augment, image, joints, visible)
        return (
            torch.from_numpy(np.ascontiguousarray(image)),
            torch.from_numpy(np.ascontiguousarray(joints, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(visible)),
        )


def augment_sample(
    augment: SeededAugment, image: np.ndarray, joints: np.ndarray, visible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `augment` on one sample; swap left/right rows after a mirror; joints out of frame -> invisible."""
    out = augment(image=image, keypoints=joints - 0.5)  # Albumentations: pixel centres at integers
    image = out["image"]
    joints = np.asarray(out["keypoints"], dtype=np.float32)[:, :2] + 0.5
    mirrors = sum(name in MIRRORING for name, _ in out.get("applied_transforms", []))
    visible = visible.copy()
    if mirrors % 2:
        joints, visible = joints[_FLIP], visible[_FLIP]
    h, w = image.shape[:2]
    inside = (joints[:, 0] >= 0) & (joints[:, 1] >= 0) & (joints[:, 0] < w) & (joints[:, 1] < h)
    return image, joints, visible & inside & np.isfinite(joints).all(axis=1)


#: the size of original LSP's standard test split (the last 1000 of its 2000 annotations)
LSP_TEST_COUNT = 1000


class LSPSettings(ImageSettings, NormalisedSettings):
    """`data.*` of `pose`: the LSP split (train_count, fractions) and the letterbox padding."""

    image_size: PositiveInt = Field(220, description="a positive integer (pixels)")
    pad_value: int = Field(0, ge=0, le=255, description="an integer grey level in 0..255")
    train_count: PositiveInt | None = Field(1000, description="a positive integer or null")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="a fraction in [0, 1)")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="a fraction in [0, 1)")
    visible_value: Literal[0, 1] | None = Field(None, description="0, 1 or null (by layout)")


class LSPDataModule(SplitDataModule[LSPSettings]):
    """LSP / LSPet joints with letterboxed images; `root=None` uses the embedded drawn-people set."""

    empty_split_hint = "raise data.test_fraction / data.val_fraction or use a larger set"

    generate = staticmethod(generate_lsp)

    def configure(self) -> None:
        s = self.settings
        self.augment = build_augment(
            s.augment,
            keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
            save_applied_params=True,
        )
        self.gpu_augment = build_gpu_augment(
            s.gpu_augment,
            mirror_permutation=LSP_FLIP_PERMUTATION,
            image_shape=(s.image_size, s.image_size, 3),
            keypoints=True,
        )
        self.synthetic_root = synthetic_folder(self.data_dir, "lsp_synthetic", self.synthetic)
        self.annotations: LSPAnnotations | None = None

    def split_train_count(self) -> int | None:
        """`data.train_count` for a real folder. A larger embedded set keeps LSP's 1000 test images: of
        `num_images` drawn people the first max(train_count, num_images - 1000) are train."""
        train_count = self.settings.train_count
        if self.root is not None or train_count is None:
            return train_count
        return max(train_count, int(self.synthetic.get("num_images", 2000)) - LSP_TEST_COUNT)

    def setup(self, stage: str | None = None) -> None:
        if self.annotations is not None:
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ann = read_lsp(self.resolved_root, self.settings.visible_value, self.skip_bad_files)
            split = split_lsp(
                ann,
                train_count=self.split_train_count(),
                test_fraction=self.settings.test_fraction,
                val_fraction=self.settings.val_fraction,
                seed=self.settings.split_seed,
            )
        for w in caught:  # re-issue for pytest/users and say it in the log
            log.warning("%s", w.message)
            warnings.warn(str(w.message), w.category, stacklevel=2)
        self.annotations = ann
        for name in SPLITS:
            rows = getattr(split, name)
            self.datasets[name] = LSPDataset(
                [ann.image_paths[i] for i in rows],
                ann.joints[rows],
                ann.visible[rows],
                ann.image_sizes[rows],
                self.settings.image_size,
                self.settings.pad_value,
                self.augment if name == "train" else None,
                self.settings.cache_images,
            )
        sizes = {s: len(d) for s, d in self.datasets.items()}
        log.info("%s (%s layout): images per split %s", self.resolved_root, ann.layout, sizes)
        if not sizes["train"]:
            raise DataError(f"{self.resolved_root}: the train split is empty")

    def info(self) -> dict[str, Any]:
        """What the model must know about the data (stored in its hyperparameters)."""
        assert self.annotations is not None, "call setup() first"
        return {
            "joint_names": list(JOINT_NAMES),
            "mean": self.settings.mean,
            "std": self.settings.std,
            "image_size": self.settings.image_size,
            "root": str(self.resolved_root),
            "layout": self.annotations.layout,
        }

    def gpu_augment_batch(self, batch: Any, epoch: int) -> Any:
        """Images, joints and visibility move together on the device; a flip swaps left and right."""
        assert self.gpu_augment is not None
        images, joints, visible = batch
        images, joints, visible, _ = self.gpu_augment(images, joints, visible, epoch=epoch)
        return [images, joints, visible]

    def plain_dataset(self, split: str) -> LSPDataset:
        """`split` without augmentation (shares the cached images), e.g. to fit error statistics."""
        ds = self.datasets[split]
        plain = LSPDataset.__new__(LSPDataset)
        plain.__dict__.update(ds.__dict__)
        plain.augment = None
        return plain

    def plain_dataloader(self, split: str = "train") -> DataLoader:
        """Unshuffled, unaugmented batches of `split`."""
        return make_loader(
            self.plain_dataset(split), self.batch_size, False, self.num_workers, self.pin_memory
        )
