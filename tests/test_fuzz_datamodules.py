"""Fuzz-style: every datamodule that reads one image file per sample, on a small data set in its real
on-disk layout whose files are random images of random sizes and modes (L, RGB, RGBA, 16-bit, CMYK JPEG,
palette) plus a few broken ones. With `on_bad_file=raise` setup names a broken file; with `skip` it
warns once, counting exactly the broken samples, and every remaining sample loads to its documented
shape and dtype. Files are read by content, so a name's suffix (`.jpg`, `.png`) need not match the
encoding, as in many real data sets."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_pose_parts import _write_lspet

from datamodules.folder import FolderDataModule
from datamodules.io import read_image
from datamodules.lsp import LSPDataModule
from datamodules.mvtec import MVTecDataModule
from datamodules.symbols import load_symbols
from datamodules.synthetic.mvtec import generate_mvtec
from datamodules.synthetic.voc import CLASS_NAMES as VOC_CLASSES
from datamodules.synthetic.voc import generate_voc
from datamodules.voc import VOCDataModule
from datamodules.voc_format import VOC_PALETTE, read_split_ids
from visionlab.errors import ConfigError, DataError

MODES = ("L", "RGB", "RGBA", "I;16", "CMYK", "P")
SIZE = 16  # the datamodules' image_size


def _random_image(rng: np.random.Generator, size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """A random image of a random mode and (unless given) a random size of 8..40 px; its format."""
    w, h = size or (int(v) for v in rng.integers(8, 41, 2))
    mode = MODES[int(rng.integers(len(MODES)))]
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    return image, "JPEG" if mode == "CMYK" else "PNG"


def _write_random(
    path: Path, rng: np.random.Generator, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    image, fmt = _random_image(rng, size)
    image.save(path, format=fmt)
    return image.size


def _break(path: Path, how: str, rng: np.random.Generator) -> Path:
    """Truncate `path` to half its bytes, or overwrite it with random bytes (an unreadable header)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else rng.bytes(64))
    with pytest.raises(DataError):  # the fixture is what it claims to be
        read_image(path)
    return path


def _setup(make: Callable[[str], object]) -> Callable[[str], dict]:
    def run(on_bad_file: str) -> dict:
        dm = make(on_bad_file)
        dm.setup("fit")
        return dm.datasets

    return run


def _raise_then_skip(setup: Callable[[str], object], broken: list[Path], unit: str = "file") -> object:
    """Check both modes; return what `setup("skip")` returned."""
    with pytest.raises(DataError) as raised:
        setup("raise")
    assert any(str(p) in str(raised.value) for p in broken), raised.value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = setup("skip")
    skips = [str(w.message) for w in caught if "on_bad_file=skip" in str(w.message)]
    assert len(skips) == 1, skips
    assert f"skipped {len(broken)} unreadable {unit}(s) of " in skips[0]
    assert any(str(p) in skips[0] for p in broken), skips[0]
    return result


def _check_image(image: torch.Tensor) -> None:
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == torch.uint8


def test_folder_datamodule(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    files = []
    for split in ("train", "val", "test"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(10):
                image, fmt = _random_image(rng)
                path = root / split / name / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
                image.save(path, format=fmt)
                files.append(path)
    broken = [_break(files[3], "truncate", rng), _break(files[25], "garbage", rng)]
    broken.append(_break(files[47], "truncate", rng))
    datasets = _raise_then_skip(
        _setup(lambda mode: FolderDataModule(str(tmp_path), str(root), image_size=SIZE, on_bad_file=mode)),
        broken,
    )
    assert [len(datasets[s]) for s in ("train", "val", "test")] == [19, 19, 19]
    for dataset in datasets.values():
        assert not set(broken) & set(dataset.paths)
        for i in range(len(dataset)):
            image, label = dataset[i]
            _check_image(image)
            assert label.dtype == torch.long and int(label) == ("cat", "dog").index(
                dataset.paths[i].parent.name
            )


def test_lsp_datamodule(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    sizes = [tuple(int(v) for v in rng.integers(8, 41, 2)) for _ in range(n)]
    joints = np.zeros((n, 14, 3))
    joints[..., :2] = rng.uniform(0, 1, (n, 14, 2)) * np.asarray(sizes)[:, None, :]
    joints[..., 2] = rng.integers(0, 2, (n, 14))  # LSPet: 1 = visible
    _write_lspet(tmp_path, joints, sizes)  # joints.mat + blank images, replaced by random ones below
    paths = [tmp_path / f"im{i + 1:05d}.jpg" for i in range(n)]
    for path, size in zip(paths, sizes, strict=True):
        _write_random(path, rng, size)
    broken = [_break(paths[4], "truncate", rng), _break(paths[30], "garbage", rng)]
    datasets = _raise_then_skip(
        _setup(lambda mode: LSPDataModule(str(tmp_path), str(tmp_path), image_size=SIZE, on_bad_file=mode)),
        broken,
    )
    assert sum(len(d) for d in datasets.values()) == n - len(broken)
    for dataset in datasets.values():
        assert not set(broken) & set(dataset.paths)
        for i in range(len(dataset)):
            image, xy, visible = dataset[i]
            _check_image(image)
            assert xy.shape == (14, 2) and xy.dtype == torch.float32
            assert visible.shape == (14,) and visible.dtype == torch.bool
            # the row kept with this image is its own: the letterboxed joints of annotation k
            k = int(dataset.paths[i].stem[2:]) - 1
            size = np.asarray(sizes[k], np.float64)
            letterboxed = np.maximum(1, np.round(size * SIZE / size.max()))
            expected = joints[k, :, :2] * letterboxed / size + (SIZE - letterboxed) // 2
            np.testing.assert_allclose(xy.numpy(), expected, atol=1e-4)
            assert visible.tolist() == (joints[k, :, 2] == 1).tolist()


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _mask_of(image: Path) -> Path:
    return image.parents[2] / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"


def _write_mvtec(root: Path, rng: np.random.Generator) -> list[Path]:
    """The generator's layout (30 train, 10 test good, 4 defect types x 5) with random images and masks
    of the same random sizes; returns every image path."""
    generate_mvtec(root, num_train=30, num_test_good=10, num_test_per_defect=5, size=SIZE, seed=0)
    images = sorted((root / "train").rglob("*.png")) + sorted((root / "test").rglob("*.png"))
    for path in images:
        w, h = _write_random(path, rng)
        if path.parent.name != "good":  # a defect covering about a quarter of the image
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4 : h // 4 + (h + 1) // 2, w // 4 : w // 4 + (w + 1) // 2] = 255
            Image.fromarray(mask).convert(("L", "P")[int(rng.integers(2))]).save(_mask_of(path))
    return images


def _mvtec(root: Path, mode: str) -> MVTecDataModule:
    return MVTecDataModule(
        str(root.parent), str(root), image_size=SIZE, val_defect_fraction=0.2, on_bad_file=mode
    )


def test_mvtec_datamodule(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "hazelnut"
    images = _write_mvtec(root, rng)
    good_test = [p for p in images if p.parts[-3:-1] == ("test", "good")]
    crack = [p for p in images if p.parent.name == "crack"]
    wrong_size = _mask_of(crack[2])
    Image.new("L", (41, 41)).save(wrong_size)  # images are at most 40 px: never the right size
    broken = [
        _break(images[0], "truncate", rng),  # train/good
        _break(good_test[3], "garbage", rng),
        _break(crack[1], "truncate", rng),
        _break(_mask_of(crack[0]), "truncate", rng),
        wrong_size,
    ]
    datasets = _raise_then_skip(_setup(lambda mode: _mvtec(root, mode)), broken, unit="image/mask pair")
    assert sum(len(d) for d in datasets.values()) == len(images) - len(broken)
    left_out = {*broken[:3], crack[0], crack[2]}
    for dataset in datasets.values():
        assert not left_out & {s.image for s in dataset.samples}
        for i in range(len(dataset)):
            image, mask, kind = dataset[i]
            _check_image(image)
            assert mask.shape == (SIZE, SIZE) and mask.dtype == torch.uint8
            assert set(mask.unique().tolist()) <= {0, 1}
            is_good = dataset.samples[i].defect_type == "good"
            assert (int(kind) == 0) == is_good and (int(mask.sum()) == 0) == is_good


def _write_voc(root: Path, rng: np.random.Generator) -> None:
    """The generator's layout and lists (60 ids) with random images and label PNGs (palette or
    grayscale, values = class indices or 255) of the same random sizes."""
    generate_voc(root, num_images=60, size=SIZE, seed=0)
    for path in sorted((root / "JPEGImages").iterdir()):
        w, h = _write_random(path, rng)
        labels = rng.integers(0, len(VOC_CLASSES), (h, w), dtype=np.uint8)
        labels[rng.random((h, w)) < 0.1] = 255
        label = Image.fromarray(labels)
        if rng.random() < 0.5:
            label.putpalette(VOC_PALETTE.tobytes())  # L -> P, indices kept
        label.save(root / "SegmentationClass" / f"{path.stem}.png")


def _voc(root: Path, mode: str) -> VOCDataModule:
    return VOCDataModule(
        str(root.parent), str(root), class_names=list(VOC_CLASSES), image_size=SIZE, on_bad_file=mode
    )


def test_voc_datamodule(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "voc"
    _write_voc(root, rng)
    train, val = read_split_ids(root, "train"), read_split_ids(root, "val")
    wrong_size = root / "SegmentationClass" / f"{val[1]}.png"
    Image.new("L", (41, 41)).save(wrong_size)  # images are at most 40 px: never the right size
    broken = [
        _break(root / "JPEGImages" / f"{train[0]}.jpg", "truncate", rng),
        _break(root / "SegmentationClass" / f"{train[5]}.png", "garbage", rng),
        _break(root / "JPEGImages" / f"{val[0]}.jpg", "garbage", rng),
        wrong_size,
    ]
    datasets = _raise_then_skip(_setup(lambda mode: _voc(root, mode)), broken, unit="image/label pair")
    assert len(datasets["train"]) == len(train) - 2 and len(datasets["val"]) == len(val) - 2
    assert datasets["test"].source is datasets["val"].source  # VOC: test = the val list
    for dataset in datasets.values():
        for i in range(len(dataset)):
            image, mask = dataset[i]
            _check_image(image)
            assert mask.shape == (SIZE, SIZE) and mask.dtype == torch.uint8
            assert set(mask.unique().tolist()) <= {*range(len(VOC_CLASSES)), 255}


@pytest.mark.parametrize("task", ["defect", "segment"])
def test_a_mask_of_another_size_alone_raises_naming_it_or_is_skipped(tmp_path: Path, task: str) -> None:
    rng = np.random.default_rng(5)
    root = tmp_path / task
    if task == "defect":
        image = _write_mvtec(root, rng)[-1]
        mask, make, unit = _mask_of(image), _mvtec, "image/mask pair"
    else:
        _write_voc(root, rng)
        image = root / "JPEGImages" / f"{read_split_ids(root, 'train')[-1]}.jpg"
        mask, make, unit = root / "SegmentationClass" / f"{image.stem}.png", _voc, "image/label pair"
    w, h = _image_size(image)
    Image.new("L", (w + 1, h)).save(mask)
    named = re.escape(f"{mask}: mask is {w + 1}x{h} but its image ")
    with pytest.raises(DataError, match=rf"{named}.*{re.escape(image.name)} is {w}x{h}"):
        make(root, "raise").setup("fit")
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable {unit}\(s\) of 60; first: {named}"):
        make(root, "skip").setup("fit")


def test_symbol_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    files = []
    for name in ("alpha", "beta", "gamma"):
        (tmp_path / name).mkdir()
        for i in range(20):
            image, fmt = _random_image(rng)
            path = tmp_path / name / f"{i:02d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            image.save(path, format=fmt)
            files.append(path)
    broken = [_break(files[7], "truncate", rng), _break(files[44], "garbage", rng)]
    symbols = _raise_then_skip(lambda mode: load_symbols(tmp_path, skip_bad_files=mode == "skip"), broken)
    assert symbols.images.shape == (60 - len(broken), 1, 28, 28) and symbols.images.dtype == torch.float32
    assert torch.isfinite(symbols.images).all()
    assert symbols.paths == [p for p in files if p not in broken]
    assert symbols.labels.tolist() == [symbols.class_names.index(p.parent.name) for p in symbols.paths]


@pytest.mark.parametrize("cls", [FolderDataModule, LSPDataModule, MVTecDataModule, VOCDataModule])
def test_on_bad_file_accepts_only_raise_or_skip(tmp_path: Path, cls: type) -> None:
    with pytest.raises(ConfigError, match=r"data\.on_bad_file='ignore' must be 'raise' or 'skip'"):
        cls(str(tmp_path), on_bad_file="ignore")
