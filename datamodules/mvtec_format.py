"""Index an MVTec AD category folder and split its good training images into train and validation.

Layout (one category, e.g. `mvtec_anomaly_detection/hazelnut`)::

    train/good/*.png                       defect-free training images
    test/good/*.png                        defect-free test images
    test/<defect>/*.png                    defective test images, one folder per defect type
    ground_truth/<defect>/<stem>_mask.png  their masks; a pixel is defective where the value is > 0

Only file names and PNG headers are read here; pixels are decoded later by the datamodule, except
with `skip_bad_files` (`data.on_bad_file=skip`): then every image and mask is decoded once here, and a
sample whose image or mask cannot be read, or whose mask has another size than its image, is left out
with one warning that counts them. A defect image without any mask file is an error either way (a
wrong layout, not a broken file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.common import readable_items
from datamodules.io import image_header_size, list_images, read_image
from visionlab.errors import DataError

GOOD = "good"
HOW_TO_GET = (
    "MVTec AD is not redistributable: download it yourself from "
    "https://www.mvtec.com/company/research/datasets/mvtec-anomaly-detection, extract it and point the data "
    "root at one category folder (e.g. .../mvtec_anomaly_detection/hazelnut); nothing is downloaded for you. "
    "Without a dataset, use the embedded synthetic hazelnut category."
)


@dataclass(frozen=True)
class MVTecSample:
    """One image: its path, defect type ("good" or a `test/` folder name) and mask path (None when good)."""

    image: Path
    defect_type: str
    mask: Path | None

    @property
    def label(self) -> int:
        """Image-level label: 1 for a defective image, 0 for a good one."""
        return int(self.defect_type != GOOD)


@dataclass(frozen=True)
class MVTecCategory:
    """All samples of one category: `train` (train/good only) and `test` (good and defective)."""

    root: Path
    train: list[MVTecSample]
    test: list[MVTecSample]
    defect_types: list[str]  # sorted defect folder names under test/, "good" excluded


def index_category(root: str | Path, skip_bad_files: bool = False) -> MVTecCategory:
    """List every sample of the category at `root`, checking that each defect image has a same-sized mask.

    Raises `DataError` naming the folder or file: missing category or `train/good`, no training images,
    a defect image without `ground_truth/<type>/<stem>_mask.png`, or a mask whose size differs (or
    whose header cannot be read). With `skip_bad_files` the last two, and images or masks that cannot
    be decoded, drop their sample instead (one warning counts them).
    """
    root = Path(root).expanduser()
    train_dir = root / "train" / GOOD
    if not train_dir.is_dir():
        raise DataError(f"{root}: not an MVTec AD category folder (looked for {train_dir}). {HOW_TO_GET}")
    train = [MVTecSample(p, GOOD, None) for p in list_images(train_dir)]
    if not train:
        raise DataError(f"{train_dir}: no training images (*.png) found. {HOW_TO_GET}")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise DataError(f"{root}: no test folder (looked for {test_dir}). {HOW_TO_GET}")

    test: list[MVTecSample] = []
    defect_types = sorted(d.name for d in test_dir.iterdir() if d.is_dir() and d.name != GOOD)
    if (test_dir / GOOD).is_dir():
        test += [MVTecSample(p, GOOD, None) for p in list_images(test_dir / GOOD)]
    for defect in defect_types:
        for image in list_images(test_dir / defect):
            mask = root / "ground_truth" / defect / f"{image.stem}_mask.png"
            if not mask.is_file():
                raise DataError(
                    f"{image}: defect image without its mask (expected {mask}); "
                    "add the mask or remove the image"
                )
            sample = MVTecSample(image, defect, mask)
            if not skip_bad_files:
                check_mask_size(sample)
            test.append(sample)
    if not test:
        raise DataError(f"{test_dir}: no test images found in test/<type>/ folders. {HOW_TO_GET}")
    if skip_bad_files:
        samples = train + test
        readable = {samples[i] for i in readable_items(samples, read_sample, unit="image/mask pair")}
        train, test = [s for s in train if s in readable], [s for s in test if s in readable]
    return MVTecCategory(root, train, test, defect_types)


def check_mask_size(sample: MVTecSample) -> None:
    """`DataError` naming the mask unless it has the size of its image (read from the headers)."""
    if sample.mask is None:
        return
    image_size, mask_size = image_header_size(sample.image), image_header_size(sample.mask)
    if image_size != mask_size:
        raise DataError(
            f"{sample.mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {sample.image} is "
            f"{image_size[0]}x{image_size[1]}; masks must have the size of their image"
        )


def read_sample(sample: MVTecSample) -> tuple[np.ndarray, np.ndarray]:
    """Decode a sample: (RGB image (H, W, 3) uint8, mask (H, W) bool); `DataError` naming the file
    that cannot be read or the mask whose size differs."""
    check_mask_size(sample)
    image = read_image(sample.image, "RGB")
    return image, read_mask(sample, image.shape[:2])


def split_train_val(
    samples: list[MVTecSample], val_fraction: float, seed: int = 0
) -> tuple[list[MVTecSample], list[MVTecSample]]:
    """Hold out `val_fraction` of the good training images as validation (used to fit thresholds).

    Deterministic for a given seed and file list; both parts keep file-name order. At least one image
    stays in training; a positive fraction holds out at least one image.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction={val_fraction}: expected a fraction in [0, 1)")
    wanted = round(len(samples) * val_fraction)
    n_val = min(len(samples) - 1, max(wanted, 1 if val_fraction > 0 else 0))
    held_out = set(np.random.default_rng(seed).permutation(len(samples))[:n_val].tolist())
    train = [s for i, s in enumerate(samples) if i not in held_out]
    val = [s for i, s in enumerate(samples) if i in held_out]
    return train, val


def read_mask(sample: MVTecSample, shape: tuple[int, int]) -> np.ndarray:
    """The sample's defect mask as bool (H, W): `mask > 0`, or all False for a good image of `shape`."""
    if sample.mask is None:
        return np.zeros(shape, dtype=bool)
    return read_image(sample.mask, mode="L") > 0
