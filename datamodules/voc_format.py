"""Reading segmentation data in the PASCAL VOC layout (the `segment` task's on-disk contract).

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png       palette PNG, pixel value = class index, 255 = void
    <root>/ImageSets/Segmentation/<split>.txt   one id per line

A class remap (original index -> new index, or 255 for void) is applied to every mask through a
256-entry lookup table, so a user can train on a subset of VOC (e.g. 8 classes + background).
This module is free of Lightning and torch: it yields uint8 numpy arrays (the *load* stage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import numpy as np

from datamodules.io import read_image, read_label_png
from visionlab.errors import ConfigError, DataError

VOID = 255  # the label of void pixels (object borders, "don't care"), ignored by losses and metrics

VOC_CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip


def _voc_colormap() -> np.ndarray:
    """The standard VOC colormap: bits of the class index spread over the high bits of R, G and B."""
    cmap = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        cmap[index] = (r, g, b)
    return cmap


VOC_PALETTE: np.ndarray = _voc_colormap()
"""(256, 3) uint8 RGB colour of each label index; 0 is black, 255 (void) is (224, 224, 192)."""
VOC_PALETTE.setflags(write=False)

Unlisted = Literal["background", "void"]


def build_remap_lut(remap: Mapping[int, int] | None, unlisted: Unlisted = "void") -> np.ndarray:
    """A 256-entry uint8 lookup table `lut[original] = new` for a remap of label indices.

    `remap=None` is the identity. Otherwise listed indices map to their value (a class index or 255),
    255 always stays void, and unlisted indices become `unlisted`: "background" (0) or "void" (255).
    """
    if remap is None:
        return np.arange(256, dtype=np.uint8)
    if unlisted not in ("background", "void"):
        raise ConfigError(f"data.unlisted={unlisted!r}: expected 'background' or 'void'")
    lut = np.full(256, 0 if unlisted == "background" else VOID, dtype=np.uint8)
    for key, value in remap.items():
        try:
            src, dst = int(key), int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"data.remap entry {key!r}: {value!r}: expected integers") from None
        if not (0 <= src <= 255 and 0 <= dst <= 255):
            raise ConfigError(f"data.remap entry {src}: {dst}: indices must lie in 0..255 (255 = void)")
        lut[src] = dst
    lut[VOID] = VOID
    return lut


def subset_remap(source_names: Sequence[str], keep: Sequence[str]) -> dict[int, int]:
    """Remap keeping the classes named in `keep`, renumbered in `keep`'s order (e.g. VOC -> 9 classes).

    Example: `subset_remap(VOC_CLASS_NAMES, ["background", "cat", "dog"])` gives {0: 0, 8: 1, 12: 2};
    combine it with `unlisted="background"` or `"void"` for the other classes.
    """
    index = {name: i for i, name in enumerate(source_names)}
    unknown = [name for name in keep if name not in index]
    if unknown:
        raise ConfigError(f"data.keep_classes: unknown class names {unknown}; known: {list(source_names)}")
    return {index[name]: new for new, name in enumerate(keep)}


def read_split_ids(root: Path, split: str) -> list[str]:
    """Ids listed in `<root>/ImageSets/Segmentation/<split>.txt` (blank lines skipped).

    Each entry must be a relative id inside the dataset: absolute paths and `..` parts raise
    `DataError` naming the list file and line, so a list cannot make the loader read outside `root`.
    """
    list_dir = Path(root) / "ImageSets" / "Segmentation"
    list_file = list_dir / f"{split}.txt"
    if not list_file.is_file():
        found = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
        raise DataError(
            f"{list_file}: split list not found (splits present: {found or 'none'}); expected a VOC layout "
            "with ImageSets/Segmentation/<split>.txt holding one image id per line"
        )
    ids = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        posix, windows = PurePosixPath(entry), PureWindowsPath(entry)
        if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
            raise DataError(
                f"{list_file}, line {line_no}: entry {entry!r} points outside the dataset; "
                "entries must be image ids relative to JPEGImages/ (no absolute paths, no '..')"
            )
        ids.append(entry)
    if not ids:
        raise DataError(f"{list_file}: the split list is empty; add one image id per line")
    return ids


class VOCSegmentation:
    """A VOC-layout split as (image, mask) uint8 arrays: image (H, W, 3) RGB, mask (H, W) class indices.

    Construction checks that every listed id has both files; each load checks the mask's size and
    that remapped values are class indices or 255, raising `DataError` naming the file otherwise.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str] = VOC_CLASS_NAMES,
        remap: Mapping[int, int] | None = None,
        unlisted: Unlisted = "void",
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        if not 1 <= self.num_classes <= VOID:
            raise ConfigError(f"data.class_names: expected 1..255 names, got {self.num_classes}")
        self.lut = build_remap_lut(remap, unlisted)
        if remap is not None:
            targets = np.unique(self.lut)
            bad = targets[(targets >= self.num_classes) & (targets != VOID)]
            if len(bad):
                raise ConfigError(
                    f"data.remap maps to {bad.tolist()}, but there are only {self.num_classes} classes "
                    f"({list(self.class_names)}); map to 0..{self.num_classes - 1} or 255 (void)"
                )
        self.ids = read_split_ids(self.root, split)
        list_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        for sample_id in self.ids:
            for path in (self.image_path(sample_id), self.mask_path(sample_id)):
                if not path.is_file():
                    raise DataError(f"{path}: file not found (listed as {sample_id!r} in {list_file})")

    def image_path(self, sample_id: str) -> Path:
        """Path of the JPEG image of `sample_id`."""
        return self.root / "JPEGImages" / f"{sample_id}.jpg"

    def mask_path(self, sample_id: str) -> Path:
        """Path of the palette PNG mask of `sample_id`."""
        return self.root / "SegmentationClass" / f"{sample_id}.png"

    def __len__(self) -> int:
        return len(self.ids)

    def read_files(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(RGB image (H, W, 3), raw label indices (H, W)) of `sample_id`, before the remap; `DataError`
        naming the file that cannot be decoded, or the mask whose size differs from its image's."""
        image = read_image(self.image_path(sample_id))
        mask_file = self.mask_path(sample_id)
        mask = read_label_png(mask_file)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{mask_file}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{self.image_path(sample_id).name} is {image.shape[1]}x{image.shape[0]}; they must match"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample_id = self.ids[index]
        image, mask = self.read_files(sample_id)
        mask = self.lut[mask]
        mask_file = self.mask_path(sample_id)
        values = np.unique(mask)
        bad = values[(values >= self.num_classes) & (values != VOID)]
        if len(bad):
            raise DataError(
                f"{mask_file}: label values {bad.tolist()} (after remap) are not classes "
                f"0..{self.num_classes - 1} or 255 (void); "
                "set data.class_names to cover them or map them with data.remap"
            )
        return image, mask
