"""Reading and writing IDX files (the MNIST format), plain or gzipped, with errors that name the file.

An IDX file is a big-endian header (two zero bytes, a dtype code, the number of dimensions, one
uint32 per dimension) followed by the raw array. MNIST uses uint8 images (N, 28, 28) in
`*-images-idx3-ubyte` and uint8 labels (N,) in `*-labels-idx1-ubyte`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from visionlab.errors import DataError

# IDX dtype code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST_HELP = (
    "put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, each optionally .gz) there, or leave data.root unset to use the embedded "
    "generated digits"
)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path}: cannot read ({err}); the file is damaged or truncated, replace it"
        ) from None


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (`.gz` decompressed on the fly) into a native-endian numpy array.

    Raises `DataError` naming the file for a bad magic number, an unexpected number of dimensions,
    or a data section that is shorter or longer than the header announces.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        magic = raw[:4].hex() if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(
            f"{path}: not an IDX file (magic number {magic}, expected 0000 followed by a dtype code "
            f"{sorted(f'{c:02x}' for c in IDX_DTYPES)} and the number of dimensions); "
            "is it an HTML error page or a still-compressed file without the .gz suffix?"
        )
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(
            f"{path}: IDX file has {ndim} dimensions (magic {raw[:4].hex()}), expected {expected_ndim} "
            f"(magic 0000080{expected_ndim} for uint8); are image and label files swapped?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header announces shape {shape} ({expected} data bytes) but the file holds "
            f"{len(raw) - header}; it is truncated or corrupt, replace it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when `path` ends in `.gz` (deterministic: no mtime stored)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(map(str, codes))}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)


def find_mnist_files(root: str | Path) -> dict[str, Path]:
    """Locate the four MNIST IDX files in `root`, `root/raw` or `root/MNIST/raw` (torchvision's layout).

    Returns paths keyed like `MNIST_FILES` ("train_images", ...); an uncompressed file wins over its
    `.gz`. All four must sit in the same folder; otherwise `DataError` lists where it looked.
    """
    root = Path(root).expanduser()
    candidates = [root, root / "raw", root / "MNIST" / "raw"]
    missing_by_dir: list[str] = []
    for folder in candidates:
        found: dict[str, Path] = {}
        for key, name in MNIST_FILES.items():
            for path in (folder / name, folder / f"{name}.gz"):
                if path.is_file():
                    found[key] = path
                    break
        if len(found) == len(MNIST_FILES):
            return found
        if found:
            missing = [MNIST_FILES[k] for k in MNIST_FILES if k not in found]
            missing_by_dir.append(f"{folder} (missing {', '.join(missing)})")
        else:
            missing_by_dir.append(str(folder))
    raise DataError(f"no MNIST IDX files found; looked in {'; '.join(missing_by_dir)}. To fix: {MNIST_HELP}")


def read_mnist_split(
    images_path: str | Path, labels_path: str | Path, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: images uint8 (N, 28, 28) and labels int64 (N,), checked against each other.

    Errors name the file: images that are not 28x28, labels outside 0..num_classes-1, or image and
    label counts that differ.
    """
    images = read_idx(images_path, expected_ndim=3)
    labels = read_idx(labels_path, expected_ndim=1)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path}: images are {images.dtype} {images.shape[1:]}, expected uint8 (28, 28) (MNIST)"
        )
    if labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: labels are {labels.dtype}, expected uint8 (IDX magic 00000801)")
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path} holds {len(images)} images; "
            "expected one label per image (files from different splits or a truncated download?)"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} found, expected 0..{num_classes - 1}")
    return images, labels.astype(np.int64)


def read_mnist(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of `split` ("train" or "test") found under `root`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = find_mnist_files(root)
    return read_mnist_split(files[f"{split}_images"], files[f"{split}_labels"])
