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
from typing import Any, Literal, get_args

import albumentations as A
import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from torch.utils.data import Dataset

from datamodules.common import SplitDataModule, decode_all, keep_decoded, readable_items
from datamodules.gpu_augment import build_gpu_augment
from datamodules.settings import ImageSettings, NormalisedSettings
from datamodules.synthetic import synthetic_folder
from datamodules.synthetic.voc import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from datamodules.synthetic.voc import generate_voc
from datamodules.transforms import SeededAugment, build_augment
from datamodules.voc_format import VOC_CLASS_NAMES, VOID, VOCSegmentation, subset_remap
from visionlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)
#: how an image is brought to data.image_size: stretched, or its long side resized and the rest padded
ResizeMode = Literal["stretch", "pad"]
RESIZE_MODES: tuple[str, ...] = get_args(ResizeMode)


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


class VOCSettings(ImageSettings, NormalisedSettings):
    """`data.*` of `segment`: the class naming (class_names, remap or keep_classes), the list files of
    the splits and how images are brought to `image_size`."""

    image_size: PositiveInt = Field(96, description="a positive integer (pixels)")
    batch_size: PositiveInt = Field(16, description="a positive integer")
    class_names: list[str] | None = Field(None, description="a list of names or null")
    remap: dict[Any, Any] | None = Field(None, description="a mapping {label value: new index or 255}")
    keep_classes: list[str] | None = Field(None, description="a list of class names or null")
    unlisted: Literal["background", "void"] = Field("void", description="'background' or 'void'")
    train_split: str = Field("train", description="the name of a list file in ImageSets/Segmentation")
    val_split: str = Field("val", description="the name of a list file in ImageSets/Segmentation")
    test_split: str | None = Field(None, description="the name of a list file, or null for val_split")
    resize: ResizeMode = Field("stretch", description=f"one of {list(RESIZE_MODES)}")


class VOCDataModule(SplitDataModule[VOCSettings]):
    """VOC-layout segmentation data; `root=None` uses the embedded scenes under `<data_dir>/voc_synthetic_<level>_<digest>`."""

    empty_split_hint = "check data.train_split / data.val_split and their list files"

    generate = staticmethod(generate_voc)

    def configure(self) -> None:
        s = self.settings
        self.class_names, self.remap = resolve_classes(
            s.root is not None, s.class_names, s.remap, s.keep_classes
        )
        self.splits = {"train": s.train_split, "val": s.val_split, "test": s.test_split or s.val_split}
        self.augment = build_pair_augment(s.augment)
        self.gpu_augment = build_gpu_augment(
            s.gpu_augment, mask_fill=VOID, image_shape=(s.image_size, s.image_size, 3), masks=True
        )
        self.synthetic_root = synthetic_folder(self.data_dir, "voc_synthetic", self.synthetic)

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
                sources[split] = VOCSegmentation(
                    root, split, self.class_names, self.remap, self.settings.unlisted
                )
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
                sources[split],
                self.settings.image_size,
                self.settings.resize,
                augment,
                self.settings.cache_images,
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
            "mean": self.settings.mean,
            "std": self.settings.std,
            "image_size": self.settings.image_size,
            "root": str(self.resolved_root),
        }
