"""Reading images from disk with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from visionlab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Decode `path` into a uint8 array (H, W, 3) for RGB or (H, W) for "L".

    16-bit, palette, RGBA and CMYK inputs are converted; anything PIL cannot decode raises
    `DataError` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I") and mode in ("RGB", "L"):
                arr = np.asarray(img, dtype=np.float32)
                scale = 65535.0 if arr.max() > 255 else 255.0
                img = Image.fromarray((arr / scale * 255).clip(0, 255).astype(np.uint8), "L")
            return np.ascontiguousarray(np.asarray(img.convert(mode)))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot decode image ({err}); replace or remove the file") from None


def image_header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels; DataError naming the file."""
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: cannot read image header ({err}); replace or remove the file") from None


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a palette/grayscale label PNG as its raw indices (H, W) uint8, without palette conversion."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise DataError(
                    f"{path}: label image has mode {img.mode}, expected a palette (P) or grayscale (L) PNG "
                    "whose pixel values are class indices"
                )
            return np.ascontiguousarray(np.asarray(img))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot decode label image ({err})") from None


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
