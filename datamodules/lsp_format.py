"""Reader for the Leeds Sports Pose formats (original LSP and LSPet) and their standard splits.

Both layouts store 14 joints in LSP order in `joints.mat` under the key `joints`:

* original LSP: array 3 x 14 x N (x, y, flag), flag 0 = visible, images `images/im0001.jpg`;
* LSPet:        array 14 x 3 x N (x, y, flag), flag 1 = visible, images `im00001.jpg`
  (in `images/` or in the dataset root).

The layout is detected from the array shape. Coordinates are kept as stored (pixels, x right, y down).

Annotations without an image file are skipped: they are counted in `LSPAnnotations.missing`
and reported by one warning; a dataset with no image at all is a `DataError`. An image that cannot be
decoded is a `DataError` naming it, or, with `skip_bad_files` (`data.on_bad_file=skip`), its row is
left out too, counted in `missing` and reported by a second warning. Joints outside the
image bounds (LSPet has some) keep their row and coordinates but are marked invisible; so are
joints with non-finite coordinates, whose coordinates are set to 0 so masked losses stay finite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.common import readable_items
from datamodules.io import image_header_size, read_image
from visionlab.errors import ConfigError, DataError

JOINT_NAMES = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow", "r_shoulder",
    "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
# Index i of a horizontally flipped image holds the joint that was at LSP_FLIP_PERMUTATION[i].
LSP_FLIP_PERMUTATION = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13)
LAYOUTS = {
    # name: (array shape without N, default visible flag value, image name pattern)
    "lsp": ((3, NUM_JOINTS), 0, "im{:04d}.jpg"),
    "lspet": ((NUM_JOINTS, 3), 1, "im{:05d}.jpg"),
}


@dataclass(frozen=True)
class LSPAnnotations:
    """Annotations of the images present on disk; row i describes `image_paths[i]`."""

    joints: np.ndarray  # (N, 14, 2) float32 pixel x, y
    visible: np.ndarray  # (N, 14) bool
    image_paths: list[Path]
    image_sizes: np.ndarray  # (N, 2) int64 width, height
    indices: np.ndarray  # (N,) int64: 0-based annotation index in joints.mat of each row
    layout: str  # "lsp" or "lspet"
    missing: list[int]  # 0-based annotation indices without an image file, or an unreadable one (skipped)

    def __len__(self) -> int:
        return len(self.image_paths)


@dataclass(frozen=True)
class LSPSplit:
    """Row positions into an `LSPAnnotations` for each split (sorted, disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def read_joints_mat(path: Path) -> tuple[np.ndarray, str]:
    """Load `joints.mat` and return (array as (N, 14, 3) float64 of x, y, flag; layout name)."""
    if not path.is_file():
        raise DataError(
            f"{path}: file not found; an LSP dataset folder needs joints.mat (original LSP 3x14xN or "
            "LSPet 14x3xN) next to its images"
        )
    import scipy.io  # lazy for speed: scipy.io (about 1 s to import) only reads joints.mat

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises many types (ValueError, TypeError, MatReadError, OSError)
        raise DataError(f"{path}: cannot read MATLAB file ({type(err).__name__}: {err})") from None
    if "joints" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no variable 'joints' (found {keys}); expected a 3x14xN or 14x3xN array")
    arr = np.asarray(mat["joints"])
    if arr.ndim == 2:  # MATLAB drops a trailing singleton dimension: a single annotation
        arr = arr[:, :, None]
    for name, (shape, _, _) in LAYOUTS.items():
        if arr.ndim == 3 and arr.shape[:2] == shape and np.issubdtype(arr.dtype, np.number):
            joints = arr.astype(np.float64)
            return (joints.transpose(2, 1, 0) if name == "lsp" else joints.transpose(2, 0, 1)), name
    raise DataError(
        f"{path}: 'joints' has shape {arr.shape} and dtype {arr.dtype}; expected a numeric array of shape "
        "3x14xN (original LSP) or 14x3xN (LSPet)"
    )


def read_lsp(
    root: str | Path, visible_value: int | None = None, skip_bad_files: bool = False
) -> LSPAnnotations:
    """Read an LSP or LSPet folder; `visible_value` overrides the flag value meaning "visible".

    None uses the layout's convention (LSP 0, LSPet 1). Image sizes are read from the file headers only,
    unless `skip_bad_files`: then every image is decoded once, and the rows of those that cannot be are
    dropped (joints, visibility and size together) with one warning that counts them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; expected joints.mat and images/ inside it")
    raw, layout = read_joints_mat(root / "joints.mat")
    _, default_visible, pattern = LAYOUTS[layout]
    flag_visible = default_visible if visible_value is None else visible_value
    if flag_visible not in (0, 1):
        raise ConfigError(f"visible_value={visible_value!r}: expected 0, 1 or null (by layout)")

    rows, paths, missing = [], [], []
    for index in range(raw.shape[0]):
        path = _find_image(root, pattern.format(index + 1))
        if path is None:
            missing.append(index)
            continue
        rows.append(index)
        paths.append(path)
    if not paths:
        raise DataError(
            f"{root}: none of the {raw.shape[0]} annotated images exists (looked for "
            f"{pattern.format(1)}... in {root / 'images'} and {root}); add the images"
        )
    if missing:
        warnings.warn(
            f"{root}: {len(missing)} of {raw.shape[0]} annotations have no image file and are skipped "
            f"(first: {pattern.format(missing[0] + 1)})",
            stacklevel=2,
        )
    if skip_bad_files:
        keep = readable_items(paths, read_image)
        missing = sorted({*missing, *rows} - {rows[i] for i in keep})
        rows, paths = [rows[i] for i in keep], [paths[i] for i in keep]
        if not paths:
            raise DataError(f"{root}: none of the {raw.shape[0]} annotated images can be read")
    sizes = [image_header_size(path) for path in paths]

    kept = raw[rows]
    joints = kept[:, :, :2]
    finite = np.isfinite(joints).all(axis=2)
    visible = (kept[:, :, 2] == flag_visible) & finite
    joints = np.where(finite[:, :, None], joints, 0.0).astype(np.float32)
    size = np.asarray(sizes, dtype=np.int64)
    inside = (
        (joints[:, :, 0] >= 0)
        & (joints[:, :, 1] >= 0)
        & (joints[:, :, 0] < size[:, None, 0])
        & (joints[:, :, 1] < size[:, None, 1])
    )
    return LSPAnnotations(
        joints=joints,
        visible=visible & inside,
        image_paths=paths,
        image_sizes=size,
        indices=np.asarray(rows, dtype=np.int64),
        layout=layout,
        missing=missing,
    )


def split_lsp(
    annotations: LSPAnnotations,
    *,
    train_count: int | None = 1000,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> LSPSplit:
    """Split rows into train/val/test; validation is always carved from train with a fixed seed.

    Original LSP with `train_count` set uses the standard split by annotation index: the first
    `train_count` annotations are train, the rest test (1000/1000 for the real 2000). Otherwise (LSPet,
    `train_count=None`, or fewer annotations than `train_count`, which warns) a seeded random
    `test_fraction` of the rows is test. `val_fraction` is a fraction of the train rows.
    """
    for key, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{key}={value}: expected a fraction in [0, 1)")
    rng = np.random.default_rng(seed)
    rows = np.arange(len(annotations))
    total = len(annotations) + len(annotations.missing)
    standard = annotations.layout == "lsp" and train_count is not None
    if standard and total <= train_count:
        warnings.warn(
            f"train_count={train_count} but the dataset has only {total} annotations: "
            f"using a random test_fraction={test_fraction} split instead",
            stacklevel=2,
        )
        standard = False
    if standard:
        is_test = annotations.indices >= train_count
        test, train = rows[is_test], rows[~is_test]
    else:
        perm = rng.permutation(rows)
        n_test = round(test_fraction * len(rows))
        test, train = perm[:n_test], perm[n_test:]
    perm = rng.permutation(train)
    n_val = round(val_fraction * len(train))
    return LSPSplit(train=np.sort(perm[n_val:]), val=np.sort(perm[:n_val]), test=np.sort(test))


def _find_image(root: Path, name: str) -> Path | None:
    for folder in (root / "images", root):
        if (folder / name).is_file():
            return folder / name
    return None
