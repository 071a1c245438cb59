"""PASCAL VOC-layout segmentation data for the `segment` task.

Three stages: *load* decodes an image and its palette mask, applies the class remap and resizes both
to `image_size` (image bilinear, mask nearest), cached in memory as uint8 when small; *augment* runs
one Albumentations pipeline on image and mask together (geometric transforms fill the mask with 255,
void); *normalise* happens on the device in the LightningModule.

VOC publishes no test masks, so the test split is the validation list unless `test_split` names
another list file.

`on_bad_file=skip` leaves out the ids whose image or label PNG cannot be decoded or whose label PNG has
another size than its image (one warning counts them). Label values that are not classes still raise:
they come from the class settings (`data.class_names`, `data.remap`), not from a broken file.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datamodules.common import (
    SplitDataModule,
    check_cache_images,
    check_on_bad_file,
    check_positive,
    decode_all,
    keep_decoded,
    readable_items,
    resolve_num_workers,
    resolve_pin_memory,
)
from datamodules.gpu_augment import build_gpu_augment
from datamodules.synthetic import ensure_generated, synthetic_folder
from datamodules.synthetic.voc import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from datamodules.synthetic.voc import generate_voc
from datamodules.transforms import SeededAugment, build_augment
from datamodules.voc_format import VOC_CLASS_NAMES, VOID, VOCSegmentation, subset_remap
from visionlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
RESIZE_MODES = ("stretch", "pad")


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """Resize an image (bilinear) and its mask (nearest) to `size` x `size`; returns (size, size, 4) uint8
    with the mask as the fourth channel. `pad` keeps the aspect ratio: the long side becomes `size` and
    the rest is padded (image black, mask void) at the bottom/right."""
    h, w = mask.shape
    if mode == "stretch":
        nh = nw = size
    else:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out_image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    out_mask = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.Resampling.NEAREST))
    pair = np.zeros((size, size, 4), dtype=np.uint8)
    pair[..., 3] = VOID
    pair[:nh, :nw, :3] = out_image
    pair[:nh, :nw, 3] = out_mask
    return pair


class SegmentationDataset(Dataset):
    """(uint8 HWC image, uint8 HW mask) pairs of one split, resized to `image_size`, optionally augmented."""

    def __init__(
        self,
        source: VOCSegmentation,
        image_size: int,
        resize: str,
        augment: SeededAugment | None,
        cache: bool | str,
    ) -> None:
        self.source = source
        self.image_size = image_size
        self.load = functools.partial(_load_pair, source, size=image_size, mode=resize)
        self.augment = augment
        keep = keep_decoded(cache, len(source), image_size * image_size * 4)  # RGB + mask bytes
        self.pairs = decode_all(range(len(source)), self.load) if keep else None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index] if self.pairs is not None else self.load(index)
        image, mask = pair[..., :3], pair[..., 3]
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
            if image.shape[:2] != (self.image_size, self.image_size) or mask.shape != image.shape[:2]:
                raise ConfigError(
                    f"data.augment turns {self.image_size}x{self.image_size} samples into "
                    f"{image.shape[1]}x{image.shape[0]} (mask {mask.shape[1]}x{mask.shape[0]}); batches need "
                    f"one size: crop back to data.image_size (e.g. RandomCrop or RandomResizedCrop)"
                )
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(mask))


def _load_pair(source: VOCSegmentation, index: int, size: int, mode: str) -> np.ndarray:
    image, mask = source[index]
    return resize_pair(image, mask, size, mode)


def build_pair_augment(specs: list[dict[str, Any]] | None) -> SeededAugment | None:
    """The joint image/mask pipeline: transforms that fill new areas and take `fill_mask` get
    `fill_mask: 255` (void) unless the config sets it, so filled borders are ignored, not background."""
    if not specs:
        return None
    filled = []
    for spec in specs:
        spec = dict(spec)
        cls = getattr(A, str(spec.get("name")), None)
        if isinstance(cls, type) and "fill_mask" in inspect.signature(cls.__init__).parameters:
            spec.setdefault("fill_mask", VOID)
        filled.append(spec)
    return build_augment(filled)


def resolve_classes(
    root_given: bool,
    class_names: list[str] | None,
    remap: dict[Any, Any] | None,
    keep_classes: list[str] | None,
) -> tuple[list[str], dict[int, int] | None]:
    """(names of the model's classes, label remap or None) from the `data.*` class keys.

    - neither remap nor keep_classes: `class_names` name the label values in the masks
      (default: the embedded set's 9 names, or VOC's 21 when `data.root` is given);
    - `keep_classes`: names looked up in `class_names` (the masks' naming), kept and renumbered in
      `keep_classes`' order; the model's classes are `keep_classes`;
    - `remap`: {label value in the masks: new index or 255}; `class_names` name the new indices.
    """
    default = list(VOC_CLASS_NAMES if root_given else SYNTHETIC_CLASS_NAMES)
    if keep_classes is not None and remap is not None:
        raise ConfigError("data.keep_classes and data.remap are alternatives: set one of them, not both")
    if class_names is not None and (
        not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names)
    ):
        raise ConfigError(f"data.class_names={class_names!r} must be a list of names")
    if len(set(class_names or [])) != len(class_names or []):
        raise ConfigError(f"data.class_names={class_names} has repeated names")
    if keep_classes is not None:
        if not keep_classes or len(set(keep_classes)) != len(keep_classes):
            raise ConfigError(f"data.keep_classes={keep_classes} must be a non-empty list of distinct names")
        return list(keep_classes), subset_remap(class_names or default, keep_classes)
    if remap is not None:
        if not isinstance(remap, dict):
            raise ConfigError(f"data.remap={remap!r} must be a mapping {{label value: new index or 255}}")
        if class_names is None:
            raise ConfigError("data.remap needs data.class_names: the names of the remapped indices 0..K-1")
        return list(class_names), dict(remap)
    return list(class_names or default), None


class VOCDataModule(SplitDataModule):
    """VOC-layout segmentation data; `root=None` uses the embedded scenes under `<data_dir>/voc_synthetic_<level>_<digest>`."""

    empty_split_hint = "check data.train_split / data.val_split and their list files"

    def __init__(
        self,
        data_dir: str,
        root: str | None = None,
        class_names: list[str] | None = None,
        remap: dict[Any, Any] | None = None,
        keep_classes: list[str] | None = None,
        unlisted: str = "void",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        image_size: int = 96,
        resize: str = "stretch",
        batch_size: int = 16,
        num_workers: int | str = 2,
        pin_memory: bool | str = "auto",
        cache_images: bool | str = "auto",
        on_bad_file: str = "raise",
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        augment: list[dict[str, Any]] | None = None,
        gpu_augment: list[dict[str, Any]] | None = None,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_positive("data.batch_size", batch_size)
        check_positive("data.image_size", image_size)
        if resize not in RESIZE_MODES:
            raise ConfigError(f"data.resize={resize!r}: expected one of {list(RESIZE_MODES)}")
        if unlisted not in ("background", "void"):
            raise ConfigError(f"data.unlisted={unlisted!r}: expected 'background' or 'void'")
        check_cache_images(cache_images)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(
                f"data.mean={list(mean)} / data.std={list(std)}: expected 3 values each, std > 0"
            )
        self.data_dir = Path(data_dir)
        self.root = Path(root).expanduser() if root else None
        self.class_names, self.remap = resolve_classes(root is not None, class_names, remap, keep_classes)
        self.unlisted = unlisted
        self.splits = {"train": train_split, "val": val_split, "test": test_split or val_split}
        self.image_size, self.resize, self.batch_size = image_size, resize, batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = resolve_pin_memory(pin_memory)
        self.cache_images = cache_images
        self.skip_bad_files = check_on_bad_file(on_bad_file)
        self.mean, self.std = list(mean), list(std)
        self.augment = build_pair_augment(augment)
        self.gpu_augment = build_gpu_augment(
            gpu_augment, mask_fill=VOID, image_shape=(image_size, image_size, 3), masks=True
        )
        self.synthetic = dict(synthetic or {})
        self.synthetic_root = synthetic_folder(self.data_dir, "voc_synthetic", self.synthetic)
        self.datasets: dict[str, SegmentationDataset] = {}

    @property
    def resolved_root(self) -> Path:
        return self.root if self.root is not None else self.synthetic_root

    def prepare_data(self) -> None:
        if self.root is None:
            ensure_generated(self.resolved_root, generate_voc, **self.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        root = self.resolved_root
        if not root.is_dir():
            raise DataError(
                f"data.root={root} does not exist or is not a folder; expected a VOC layout: "
                "JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt"
            )
        sources: dict[str, VOCSegmentation] = {}
        for split in self.splits.values():
            if split not in sources:
                sources[split] = VOCSegmentation(root, split, self.class_names, self.remap, self.unlisted)
        if self.skip_bad_files:  # each listed id once, whatever lists hold it: one warning counts them all
            ids = list(dict.fromkeys(i for source in sources.values() for i in source.ids))
            any_source = next(iter(sources.values()))
            readable = {ids[i] for i in readable_items(ids, any_source.read_files, unit="image/label pair")}
            for source in sources.values():
                source.ids = [i for i in source.ids if i in readable]
        datasets = {}
        for stage_name, split in self.splits.items():
            augment = self.augment if stage_name == "train" else None
            datasets[stage_name] = SegmentationDataset(
                sources[split], self.image_size, self.resize, augment, self.cache_images
            )
        self.datasets = datasets
        log.info(
            "%s: %d classes, images per split %s",
            root,
            len(self.class_names),
            {f"{k} ({self.splits[k]})": len(d) for k, d in self.datasets.items()},
        )

    def gpu_augment_batch(self, batch: Any, epoch: int) -> Any:
        """Images and masks move together on the device; pixels from outside the frame become void."""
        assert self.gpu_augment is not None
        images, masks = batch
        images, _, _, masks = self.gpu_augment(images, masks=masks, epoch=epoch)
        return [images, masks]

    def info(self) -> dict[str, Any]:
        """What the model must know about the data (stored in its hyperparameters)."""
        return {
            "class_names": list(self.class_names),
            "num_classes": len(self.class_names),
            "ignore_index": VOID,
            "mean": self.mean,
            "std": self.std,
            "image_size": self.image_size,
            "root": str(self.resolved_root),
        }
