"""Class-per-folder symbol sets (e.g. the course's Greek letters) turned into MNIST-like tensors.

`folder/<class>/<image>`: dark strokes on a light background, any size. The course transform
made explicit (`SymbolTransform`): grayscale -> scale about the centre by 36/128 -> centre crop
28 -> invert to white on black -> normalise with the MNIST mean/std. For the 133x133 course
images this keeps the central ~100x100 pixels, shrunk to 28x28.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from datamodules.common import readable_items
from datamodules.io import list_images, read_image
from visionlab.errors import ConfigError, DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
INTERPOLATIONS = ("nearest", "area")


@dataclass(frozen=True)
class SymbolTransform:
    """The course's symbol-to-digit transform with every step a parameter.

    interpolation "nearest" replicates the course exactly (torchvision `affine`, whose default is
    nearest-neighbour, on the full image, then `center_crop`); thin strokes can break up at this
    3.6x reduction. "area" resizes with anti-aliasing to the same scale before cropping (the same
    framing within half a pixel), which keeps strokes continuous. Where the scaled image is smaller
    than the crop, the border is black before inversion (white after), as in the course.
    """

    scale: float = 36 / 128
    crop: int = 28
    interpolation: str = "nearest"
    invert: bool = True
    mean: float = MNIST_MEAN
    std: float = MNIST_STD

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"symbols transform interpolation={self.interpolation!r}; expected one of {INTERPOLATIONS}"
            )
        if self.scale <= 0 or self.crop <= 0 or self.std <= 0:
            raise ConfigError(f"symbols transform needs scale, crop and std > 0, got {self}")

    def __call__(self, gray: torch.Tensor) -> torch.Tensor:
        """Map a uint8 grayscale image (H, W) to a normalised float tensor (1, crop, crop)."""
        x = gray[None].float() / 255.0
        if self.interpolation == "nearest":
            x = TF.affine(
                x,
                angle=0.0,
                translate=[0, 0],
                scale=self.scale,
                shear=[0.0],
                interpolation=InterpolationMode.NEAREST,
            )
        else:
            size = [max(1, round(d * self.scale)) for d in x.shape[-2:]]
            x = TF.resize(x, size, interpolation=InterpolationMode.BILINEAR, antialias=True).clamp(0, 1)
        x = TF.center_crop(x, [self.crop, self.crop])
        if self.invert:
            x = 1.0 - x
        return (x - self.mean) / self.std


@dataclass
class SymbolSet:
    """A loaded symbol set: images (N, 1, 28, 28) float, labels (N,) int64, class names, source files."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    paths: list[Path]


def load_symbols(
    folder: str | Path,
    transform: SymbolTransform | None = None,
    class_names: list[str] | None = None,
    skip_bad_files: bool = False,
) -> SymbolSet:
    """Load every image under `folder/<class>/` (classes sorted by name, files by name).

    Pass the training set's `class_names` when loading a test folder so label indices agree; its
    class folders must then be among them (a subset is fine). Hidden folders and `__MACOSX` are
    skipped. A missing folder, no class folders, or a class folder without images is a `DataError`;
    so is an image that cannot be decoded, unless `skip_bad_files` (`data.on_bad_file=skip`): then such
    images are left out with one warning that counts them.
    """
    folder = Path(folder).expanduser()
    transform = transform or SymbolTransform()
    if not folder.is_dir():
        raise DataError(f"{folder}: symbol folder not found; expected {folder}/<class>/<image>.png")
    found = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))
    )
    if not found:
        raise DataError(f"{folder}: no class folders; expected one sub-folder of images per class")
    names = list(class_names) if class_names is not None else found
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataError(f"{folder}: class folders {unknown} are not among the training classes {names}")
    labels: list[int] = []
    paths: list[Path] = []
    for name in found:
        files = list_images(folder / name)
        if not files:
            raise DataError(
                f"{folder / name}: class folder holds no images (png, jpg, ...); add some or remove it"
            )
        labels += [names.index(name)] * len(files)
        paths += files
    if skip_bad_files:
        keep = readable_items(paths, read_image)
        labels, paths = [labels[i] for i in keep], [paths[i] for i in keep]
        if not paths:
            raise DataError(f"{folder}: none of its images can be read")
    images = [transform(torch.tensor(read_image(path, mode="L"))) for path in paths]
    return SymbolSet(torch.stack(images), torch.tensor(labels, dtype=torch.long), names, paths)
