"""The embedded `finetune` set: 12 classes of drawn shapes on backgrounds, written as class-per-folder
PNGs (`root/{train,val,test}/<class>/<n>.png`). Colour is random per image, so only the shape tells
the class.

Two levels: `hard` (cluttered backgrounds with strokes, shape colours that may nearly match the
background) and `easy` (the same shapes, rotations and gradient backgrounds, but at most one clutter
stroke and a shape colour that always stands out from the background). `hard` is the original set,
unchanged for a given seed.

`classes` draws a subset (e.g. two disjoint halves for pretraining and fine-tuning): each class keeps
its own random stream, so a subset's images are exactly the full set's images of those classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datamodules.synthetic import LEVELS
from datamodules.synthetic.progress import advance, announce
from visionlab.errors import ConfigError

CLASS_NAMES = [
    "arrow",
    "circle",
    "crescent",
    "cross",
    "ellipse",
    "heart",
    "hexagon",
    "pentagon",
    "ring",
    "square",
    "star",
    "triangle",
]


def check_classes(classes: Any) -> list[str] | None:
    """`data.synthetic.classes` as distinct names in CLASS_NAMES order, None for all 12 (listed or
    not), so any spelling of one set is one folder; a one-line ConfigError for an unknown name or < 2."""
    if classes is None:
        return None
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(f"data.synthetic.classes={classes!r} must be null or a list of class names")
    unknown = [name for name in classes if name not in CLASS_NAMES]
    if unknown:
        raise ConfigError(
            f"data.synthetic.classes: unknown class names {unknown}; valid: {', '.join(CLASS_NAMES)}"
        )
    chosen = [name for name in CLASS_NAMES if name in classes]
    if len(chosen) < 2:
        raise ConfigError(f"data.synthetic.classes={list(classes)}: a classifier needs at least 2 classes")
    return None if len(chosen) == len(CLASS_NAMES) else chosen


def subset_tag(classes: list[str] | None) -> str | None:
    """Folder name part of a class subset from `check_classes`, `<n>cls` (the folder's digest of all of
    `data.synthetic` tells subsets of one size apart); None for all 12 classes."""
    return None if classes is None else f"{len(classes)}cls"


#: oversampling factor for anti-aliased edges
SUPERSAMPLE = 2


def _regular(n: int, r_outer: float = 1.0, r_inner: float | None = None) -> np.ndarray:
    """Vertices of a regular n-gon (or a star when r_inner is given), unit radius."""
    if r_inner is None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) - np.pi / 2
        return np.stack([np.cos(t), np.sin(t)], 1) * r_outer
    t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) - np.pi / 2
    r = np.where(np.arange(2 * n) % 2 == 0, r_outer, r_inner)
    return np.stack([np.cos(t) * r, np.sin(t) * r], 1)


def _outline(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygons (unit scale, centred) whose union is the shape; the second of a pair is a hole."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    if name == "circle":
        return [circle]
    if name == "ellipse":
        return [circle * [1.0, rng.uniform(0.45, 0.6)]]
    if name == "ring":
        return [circle, circle * rng.uniform(0.45, 0.6)]
    if name == "crescent":
        return [circle, circle * 0.85 + [rng.uniform(0.35, 0.5), 0]]
    if name == "triangle":
        return [_regular(3)]
    if name == "square":
        return [_regular(4)]
    if name == "pentagon":
        return [_regular(5)]
    if name == "hexagon":
        return [_regular(6)]
    if name == "star":
        return [_regular(5, 1.0, rng.uniform(0.35, 0.5))]
    if name == "cross":
        w = rng.uniform(0.25, 0.35)
        return [
            np.array(
                [
                    [-w, -1],
                    [w, -1],
                    [w, -w],
                    [1, -w],
                    [1, w],
                    [w, w],
                    [w, 1],
                    [-w, 1],
                    [-w, w],
                    [-1, w],
                    [-1, -w],
                    [-w, -w],
                ]
            )
        ]
    if name == "arrow":
        w = rng.uniform(0.18, 0.28)
        return [np.array([[-1, -w], [0.2, -w], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, w], [-1, w]])]
    if name == "heart":
        s = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(s) ** 3
        y = -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s))
        return [np.stack([x, y], 1) / 17.0]
    raise ValueError(name)


def _background(size: int, rng: np.random.Generator, strokes: tuple[int, int] = (2, 6)) -> Image.Image:
    """A colour gradient with noise and a few clutter strokes (`strokes`: range of their number)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
    img = c0 * (1 - ramp) + c1 * ramp + rng.normal(0, 12, (size, size, 1))
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(*strokes)):
        pts = [tuple(p) for p in rng.uniform(0, size, (2, 2))]
        draw.line(
            pts,
            fill=tuple(int(v) for v in rng.uniform(0, 255, 3)),
            width=int(rng.integers(1, 3 * SUPERSAMPLE)),
        )
    return canvas


def _contrasting_fill(canvas: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """A random colour whose brightness differs from the background's mean by at least 70 grey levels."""
    background = np.asarray(canvas, dtype=np.float64).reshape(-1, 3).mean(0).mean()
    for _ in range(100):
        fill = rng.uniform(0, 255, 3)
        if abs(fill.mean() - background) >= 70:
            return fill
    return np.full(3, 255.0 if background < 128 else 0.0)


def draw_shape(name: str, size: int, rng: np.random.Generator, level: str = "hard") -> np.ndarray:
    """One RGB uint8 image of class `name`: random scale, rotation, position and colours."""
    big = size * SUPERSAMPLE
    easy = level == "easy"
    canvas = _background(big, rng, (0, 2) if easy else (2, 6))
    radius = rng.uniform(0.28 if easy else 0.22, 0.4) * big
    center = rng.uniform(radius * 0.9, big - radius * 0.9, 2)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polys = _outline(name, rng)
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    for k, poly in enumerate(polys):
        pts = poly @ rot.T * radius + center
        draw.polygon([tuple(p) for p in pts], fill=0 if k else 255)
    fill = _contrasting_fill(canvas, rng) if easy else rng.uniform(0, 255, 3)
    shade = np.linspace(0.75, 1.15, big)[None, :, None] if rng.random() < 0.5 else 1.0
    texture = (fill * shade + rng.normal(0, 10, (big, big, 3))).clip(0, 255).astype(np.uint8)
    canvas.paste(Image.fromarray(texture), (0, 0), mask)
    return np.asarray(canvas.resize((size, size), Image.BILINEAR))


def generate_shapes(
    root: Path,
    per_class: dict[str, int] | None = None,
    image_size: int = 64,
    seed: int = 0,
    level: str = "hard",
    classes: list[str] | None = None,
) -> None:
    """Write `per_class[split]` images of each class (`classes`, default all 12) into
    `root/<split>/<class>/`. Each class's stream is seeded by its index in CLASS_NAMES, whatever the subset."""
    if level not in LEVELS:
        raise ValueError(f"data.synthetic.level={level!r}; expected one of {LEVELS}")
    per_class = per_class or {"train": 80, "val": 20, "test": 20}
    announce(
        sum(int(n) for n in per_class.values()) * (len(CLASS_NAMES) if classes is None else len(classes))
    )
    for split_index, (split, count) in enumerate(per_class.items()):
        for class_index, name in enumerate(CLASS_NAMES):
            if classes is not None and name not in classes:
                continue
            rng = np.random.default_rng([seed, split_index, class_index])
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(int(count)):
                Image.fromarray(draw_shape(name, image_size, rng, level)).save(folder / f"{i:04d}.png")
                advance()
