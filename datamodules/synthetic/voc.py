"""Procedural scenes for the `segment` task, written in the PASCAL VOC layout.

Each image shows a textured background and a few overlapping objects of 8 classes. Colours come
from one random palette per image shared by all classes, so a model must use shape and texture:
classes 1-6 differ by outline (disc, square, triangle, star, ring, cross) and get a random fill;
class 7 is a striped ellipse and class 8 a checkered rectangle. As in VOC, a band a few pixels
wide around every object outline (including between touching objects of one class) is void (255).

Two levels: `hard` (the original set: 2-7 objects of radius 10-24 % of the image, every colour from
the image's shared palette) and `easy` (2-4 larger objects, radius 14-26 %, each class in its own
colour family, as real classes have typical colours, on a greyer background; the same outlines,
fills and void borders). `hard` is unchanged for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from datamodules.synthetic import LEVELS
from datamodules.synthetic.progress import tracked
from datamodules.voc_format import VOC_PALETTE, VOID

CLASS_NAMES: tuple[str, ...] = (
    "background", "disc", "square", "triangle", "star", "ring", "cross", "striped_ellipse",
    "checker_rectangle",
)  # fmt: skip

_PALETTE_SIZE = 6  # colours per image, shared by the background and all objects
# The easy level's colour family of each object class (RGB), jittered per object.
_CLASS_COLOURS = np.array([
    (0, 0, 0), (205, 45, 45), (45, 75, 210), (225, 200, 35), (40, 165, 60), (185, 55, 185),
    (35, 190, 205), (235, 125, 25), (235, 235, 235),
], dtype=np.float32)  # fmt: skip


def _circle(n: int = 40) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, outer: float = 1.15, inner: float = 0.48) -> np.ndarray:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_W = 0.34  # half-width of the cross's arms
_CROSS = np.array([(-_W, -1), (_W, -1), (_W, -_W), (1, -_W), (1, _W), (_W, _W), (_W, 1), (-_W, 1),
                   (-_W, _W), (-1, _W), (-1, -_W), (-_W, -_W)])  # fmt: skip
# Outlines in object units (radius about 1), as a list of (polygon, fill) drawn in order.
_OUTLINES: dict[int, list[tuple[np.ndarray, int]]] = {
    1: [(_circle(), 1)],
    2: [(np.array([(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]), 1)],
    3: [(1.15 * _circle(3), 1)],
    4: [(_star(), 1)],
    5: [(_circle(), 1), (0.55 * _circle(), 0)],
    6: [(_CROSS, 1)],
    7: [(_circle() * np.array([1.2, 0.6]), 1)],
    8: [(np.array([(-1.15, -0.65), (1.15, -0.65), (1.15, 0.65), (-1.15, 0.65)]), 1)],
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A (size, size) float32 field in [0, 1] varying smoothly over about `cells` cells."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BICUBIC)).clip(0, 1)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[..., None]


def _object_fill(
    rng: np.random.Generator, cls: int, colours: np.ndarray, u: np.ndarray, v: np.ndarray
) -> np.ndarray:
    """The (H, W, 3) fill of an object of class `cls`; `u, v` are pixel coordinates in its own frame."""
    size = u.shape[0]
    a, b = colours[rng.choice(len(colours), 2, replace=False)]
    if cls == 7:
        period = rng.uniform(5, 9)
        return _blend(a, b, ((v / period) % 1.0 < 0.5).astype(np.float32))
    if cls == 8:
        cell = rng.uniform(4, 7)
        return _blend(a, b, ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32))
    kind = rng.integers(3)
    if kind == 0:  # flat, lightly shaded
        return _blend(a, a * 0.75, (u - u.min()) / (np.ptp(u) + 1e-6))
    if kind == 1:  # smooth two-colour mottling
        return _blend(a, b, _smooth_noise(rng, size, 8))
    return _blend(a, b, (rng.random((size, size), dtype=np.float32) < 0.3).astype(np.float32) * 0.6)


def _background(rng: np.random.Generator, colours: np.ndarray, size: int) -> np.ndarray:
    """Two palette colours mixed by smooth noise, sometimes overlaid with a faint stripe or check pattern."""
    a, b = colours[rng.choice(len(colours), 2, replace=False)]
    image = _blend(a, b, _smooth_noise(rng, size, int(rng.integers(3, 7))))
    if rng.random() < 0.3:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = rng.uniform(5, 12)
        pattern = ((xx + yy * rng.uniform(-1, 1)) / period) % 1.0 < 0.5
        if rng.random() < 0.5:
            pattern ^= (yy / period) % 1.0 < 0.5
        image = image * (1 - 0.15 * pattern[..., None])
    return image


def _class_colours(rng: np.random.Generator, cls: int) -> np.ndarray:
    """The easy level's fill colours of one object: its class colour family, jittered, as a light and a dark shade."""
    base = np.clip(_CLASS_COLOURS[cls] * rng.uniform(0.8, 1.1) + rng.uniform(-20, 20, 3), 0, 255)
    return np.stack([base, base * rng.uniform(0.55, 0.75)]).astype(np.float32)


def draw_scene(rng: np.random.Generator, size: int, level: str = "hard") -> tuple[np.ndarray, np.ndarray]:
    """One scene: an RGB uint8 image (size, size, 3) and its label mask (size, size) with void borders."""
    if level not in LEVELS:
        raise ValueError(f"data.synthetic.level={level!r}; expected one of {LEVELS}")
    easy = level == "easy"
    colours = rng.uniform(20, 235, (_PALETTE_SIZE, 3)).astype(np.float32)
    if easy:  # a greyer background, so the class colours stand out
        colours = colours.mean(axis=1, keepdims=True) * 0.75 + colours * 0.25
    image = _background(rng, colours, size)
    labels = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for instance in range(1, int(rng.integers(2, 5 if easy else 7)) + 1):
        cls = int(rng.integers(1, 9))
        radius = rng.uniform(0.14, 0.26) if easy else rng.uniform(0.10, 0.24)
        radius *= size
        angle = rng.uniform(0, 2 * np.pi)
        centre = rng.uniform(0.1, 0.9, 2) * size
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon, fill in _OUTLINES[cls]:
            points = polygon @ rot.T * radius + centre
            draw.polygon([tuple(p) for p in points.tolist()], fill=fill)
        mask = np.asarray(canvas, dtype=bool)
        if not mask.any():
            continue
        dx, dy = xx - centre[0], yy - centre[1]
        u = dx * np.cos(angle) + dy * np.sin(angle)  # object frame: undo the rotation
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        fill_colours = _class_colours(rng, cls) if easy else colours
        image[mask] = _object_fill(rng, cls, fill_colours, u, v)[mask]
        labels[mask] = cls
        instances[mask] = instance
    width = 2 * max(1, round(size / 200)) + 1
    border = ndimage.maximum_filter(instances, width) != ndimage.minimum_filter(instances, width)
    labels[border] = VOID
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), labels


def _id(index: int) -> str:
    return f"synth_{index:05d}"


def generate_voc(
    root: Path,
    *,
    num_images: int = 1000,
    size: int = 160,
    seed: int = 0,
    val_fraction: float = 0.2,
    level: str = "hard",
) -> None:
    """Write `num_images` scenes of `size`x`size` into `root` as VOC (JPEGImages, SegmentationClass,
    ImageSets/Segmentation/{train,val,trainval}.txt). Deterministic given `seed`.
    """
    if num_images < 2 or not 0 < val_fraction < 1:
        raise ValueError(f"need num_images >= 2 and 0 < val_fraction < 1, got {num_images}, {val_fraction}")
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in tracked(
        range(num_images), num_images
    ):  # about 8 ms per 160 px image on one core: no process pool needed
        image, labels = draw_scene(np.random.default_rng([seed, index]), size, level)
        Image.fromarray(image).save(root / "JPEGImages" / f"{_id(index)}.jpg", quality=90)
        mask = Image.fromarray(labels, "P")
        mask.putpalette(VOC_PALETTE.tobytes())
        mask.save(root / "SegmentationClass" / f"{_id(index)}.png")
    order = np.random.default_rng(seed).permutation(num_images)
    num_val = min(num_images - 1, max(1, round(num_images * val_fraction)))
    val = sorted(order[:num_val].tolist())
    train = sorted(order[num_val:].tolist())
    lists = {"train": train, "val": val, "trainval": sorted(train + val)}
    for name, indices in lists.items():
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(
            "".join(f"{_id(i)}\n" for i in indices)
        )
