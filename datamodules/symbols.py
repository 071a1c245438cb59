"""Class-per-folder symbol sets (e.g. the course's Greek letters) turned into MNIST-like tensors.

`folder/<class>/<image>`: dark strokes on a light background, any size. The course transform
made explicit (`SymbolTransform`): grayscale -> scale about the centre by 36/128 -> centre crop
28 -> invert to white on black -> normalise with the MNIST mean/std. For the 133x133 course
images this keeps the central ~100x100 pixels, shrunk to 28x28.

`symbols.train` / `symbols.test` name such folders, or `embedded`: the generated Greek letters
(`datamodules.synthetic.greek`) written once under `<paths.data_dir>/greek_synthetic/{train,test}`;
`resolve_symbol_folders` turns the config into folders, generating the embedded set when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from datamodules.common import readable_items
from datamodules.io import list_images, read_image
from datamodules.synthetic import ensure_generated
from datamodules.synthetic.greek import DEFAULT_CLASSES, check_params, generate_greek
from visionlab.errors import ConfigError, DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
INTERPOLATIONS = ("nearest", "area")
#: `symbols.train` / `symbols.test` value naming the embedded generated Greek set
EMBEDDED = "embedded"
#: `symbols.test` default: the embedded set's test hand when `symbols.train` is embedded, else none
AUTO = "auto"
#: folder of the embedded set under paths.data_dir
EMBEDDED_DIR = "greek_synthetic"
#: `symbols.synthetic` defaults (the generator's parameters)
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "classes": list(DEFAULT_CLASSES),
    "per_class_train": 9,
    "per_class_test": 10,
    "size": 133,
    "seed": 0,
}


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
    found = class_folders(folder)
    names = list(class_names) if class_names is not None else found
    check_classes_among(folder, found, names)
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


def class_folders(folder: str | Path) -> list[str]:
    """The class sub-folder names of a symbol folder, sorted (hidden ones and `__MACOSX` skipped);
    a missing folder or one without class folders is a `DataError`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: symbol folder not found; expected {folder}/<class>/<image>.png")
    found = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))
    )
    if not found:
        raise DataError(f"{folder}: no class folders; expected one sub-folder of images per class")
    return found


def check_classes_among(folder: str | Path, found: list[str], names: list[str]) -> None:
    """`DataError` unless every class of `found` (a test set's) is among the training classes `names`."""
    unknown = [c for c in found if c not in names]
    if unknown:
        raise DataError(f"{folder}: class folders {unknown} are not among the training classes {names}")


def synthetic_params(synthetic: dict[str, Any] | None) -> dict[str, Any]:
    """`symbols.synthetic` completed with the defaults and checked (`ConfigError` naming the key)."""
    synthetic = dict(synthetic or {})
    unknown = sorted(set(synthetic) - set(SYNTHETIC_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"symbols.synthetic has unknown keys {unknown}; expected some of {list(SYNTHETIC_DEFAULTS)}"
        )
    params = {**SYNTHETIC_DEFAULTS, **synthetic}
    if isinstance(params["classes"], (list, tuple)):
        params["classes"] = [str(c) for c in params["classes"]]
    try:
        check_params(params["classes"], params["per_class_train"], params["per_class_test"], params["size"])
    except ValueError as err:
        raise ConfigError(f"symbols.synthetic.{err}") from None
    if params["per_class_train"] < 2:
        raise ConfigError(
            f"symbols.synthetic.per_class_train={params['per_class_train']} must be >= 2: leave-one-out "
            "needs another image of the same class"
        )
    if params["per_class_test"] < 1:
        raise ConfigError(
            f"symbols.synthetic.per_class_test={params['per_class_test']} must be >= 1 "
            "(symbols.test=null evaluates no new letters)"
        )
    seed = params["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"symbols.synthetic.seed={seed!r} must be an integer >= 0")
    return params


def embedded_symbols(data_dir: str | Path, synthetic: dict[str, Any] | None = None) -> Path:
    """The embedded Greek set under `data_dir/greek_synthetic` (generated on first use, ~0.5 s):
    returns that folder, holding `train/<class>/` (the training hand) and `test/<class>/` (another hand)."""
    root = Path(data_dir).expanduser() / EMBEDDED_DIR
    return ensure_generated(root, generate_greek, **synthetic_params(synthetic))


def resolve_symbol_folders(
    symbols: dict[str, Any], data_dir: str | Path | None
) -> tuple[str | None, str | None]:
    """(train folder, test folder) of the `symbols:` config, `embedded` / `auto` replaced by the
    embedded set's folders (generated under `data_dir` when needed); None where there is none."""
    train, test = symbols.get("train"), symbols.get("test")
    if test == AUTO:
        test = EMBEDDED if train == EMBEDDED else None
    if EMBEDDED not in (train, test):
        return (str(train) if train else None), (str(test) if test else None)
    if data_dir is None:
        raise ConfigError(
            "symbols.train/test=embedded needs paths.data_dir, where the embedded Greek set is generated"
        )
    root = embedded_symbols(data_dir, symbols.get("synthetic"))
    return (
        str(root / "train") if train == EMBEDDED else (str(train) if train else None),
        str(root / "test") if test == EMBEDDED else (str(test) if test else None),
    )
