"""Procedurally drawn handwritten-style digits written as MNIST IDX files.

Each digit class has a few stroke skeletons (polylines and arcs in a unit box, y pointing down)
whose proportions are drawn at random; every sample then gets its strokes nudged apart, a smooth
random warp, a random slant, rotation and aspect, a random pen width, and sometimes a pen lift.
As in MNIST, the ink is fitted into a 20x20 box, rendered anti-aliased (drawn at 4x with PIL and
box-downsampled) and placed in a 28x28 field with its centre of mass at the centre; white on black.
"""

from __future__ import annotations

from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datamodules.idx import MNIST_FILES, write_idx
from datamodules.synthetic.progress import tracked

Stroke = np.ndarray  # (K, 2) points (x, y) in a unit box, y down
SUPERSAMPLE = 4  # drawn at 4x and box-downsampled: anti-aliasing
FIELD = 28  # output image size
BOX = 20  # the ink is fitted into a BOX x BOX square, as in MNIST
CANVAS = 48  # drawing canvas (1x pixels): room for any centre-of-mass shift
CHUNK = 1000  # images per seeded work unit; fixes the output independently of the worker count


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> Stroke:
    """Points on an ellipse from angle a0 to a1 (degrees; 0 = right, 90 = down since y points down)."""
    t = np.radians(np.linspace(a0, a1, max(4, int(abs(a1 - a0) / 8))))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 12) -> Stroke:
    """A quadratic Bezier curve from p0 to p2 pulled towards p1."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * t * (1 - t) * np.asarray(p1) + t**2 * np.asarray(p2)


def _poly(*points: tuple[float, float]) -> Stroke:
    return np.asarray(points, dtype=np.float64)


def _cat(*parts: Stroke) -> Stroke:
    return np.concatenate(parts, axis=0)


def _zero(r: np.random.Generator) -> list[Stroke]:
    a0 = r.uniform(-130, -40)
    return [_arc(0.5, 0.5, r.uniform(0.22, 0.42), 0.5, a0, a0 + r.uniform(335, 385))]


def _one(r: np.random.Generator) -> list[Stroke]:
    top = (0.5 + r.uniform(-0.04, 0.04), 0.0)
    stem = _bezier(top, (0.5 + r.uniform(-0.06, 0.06), 0.5), (0.5, 1.0), n=6)
    if r.random() < 0.35:  # the European flag
        stem = _cat(_poly((0.5 - r.uniform(0.12, 0.3), r.uniform(0.12, 0.3))), stem)
    strokes = [stem]
    if r.random() < 0.1:  # a base serif
        strokes.append(_poly((0.5 - r.uniform(0.15, 0.3), 1.0), (0.5 + r.uniform(0.15, 0.3), 1.0)))
    return strokes


def _two(r: np.random.Generator) -> list[Stroke]:
    ry, rx = r.uniform(0.2, 0.32), r.uniform(0.26, 0.4)
    top = _arc(0.5, ry, rx, ry, r.uniform(160, 205), r.uniform(365, 420))
    bottom_left = (r.uniform(0.02, 0.25), 1.0)
    neck = _bezier(tuple(top[-1]), (0.5 + r.uniform(-0.15, 0.1), r.uniform(0.55, 0.75)), bottom_left, n=8)
    parts = [top, neck]
    if r.random() < 0.25:  # a small loop where the neck meets the base
        cx, cy = bottom_left[0] + 0.08, 0.93
        parts.append(_arc(cx, cy, 0.09, 0.07, 180, 180 - 330))
    parts.append(_poly((r.uniform(0.75, 1.0), 1.0 + r.uniform(-0.06, 0.04))))
    return [_cat(*parts)]


def _three(r: np.random.Generator) -> list[Stroke]:
    cy1 = r.uniform(0.2, 0.3)
    mid = 2 * cy1
    upper = _arc(0.5, cy1, r.uniform(0.22, 0.34), cy1, r.uniform(185, 225), 450)
    lower = _arc(0.5, (mid + 1) / 2, r.uniform(0.28, 0.4), (1 - mid) / 2, 270, r.uniform(475, 525))
    upper[-1, 0] -= r.uniform(0.0, 0.15)  # the middle cusp points left by a varying amount
    lower[0, 0] = upper[-1, 0]
    return [_cat(upper, lower)]


def _four(r: np.random.Generator) -> list[Stroke]:
    y = r.uniform(0.55, 0.72)
    x_stem = r.uniform(0.55, 0.78)
    if r.random() < 0.5:  # open 4: one diagonal and the crossbar
        arm = _poly((r.uniform(0.4, 0.65), 0.0), (r.uniform(0.0, 0.12), y), (1.0, y + r.uniform(-0.05, 0.05)))
        stem = _poly((x_stem, r.uniform(0.15, 0.4)), (x_stem + r.uniform(-0.06, 0.06), 1.0))
    else:  # two down strokes
        arm = _poly(
            (r.uniform(0.05, 0.25), 0.0), (r.uniform(0.0, 0.12), y), (1.0, y + r.uniform(-0.05, 0.05))
        )
        stem = _poly((x_stem, r.uniform(0.0, 0.1)), (x_stem + r.uniform(-0.06, 0.06), 1.0))
    return [arm, stem]


def _five(r: np.random.Generator) -> list[Stroke]:
    rx, ry = r.uniform(0.3, 0.4), r.uniform(0.25, 0.33)
    belly = _arc(0.5, 1 - ry, rx, ry, r.uniform(200, 225), r.uniform(470, 520))
    corner = (r.uniform(0.12, 0.3), 0.0)
    bar = _poly(corner, (r.uniform(0.7, 1.0), r.uniform(-0.04, 0.04)))
    down = _cat(_poly(corner), belly)
    if r.random() < 0.4:  # the bar drawn as a separate, detached stroke
        return [down, bar + np.array([r.uniform(0.0, 0.08), r.uniform(-0.04, 0.02)])]
    return [_cat(bar[::-1], belly)]


def _six(r: np.random.Generator) -> list[Stroke]:
    rx, ry = r.uniform(0.26, 0.38), r.uniform(0.2, 0.3)
    cy = 1 - ry
    start = (r.uniform(0.5, 0.85), 0.0)
    neck = _bezier(start, (r.uniform(0.05, 0.3), r.uniform(0.15, 0.4)), (0.5 - rx, cy), n=10)
    loop = _arc(0.5, cy, rx, ry, 180, 180 - r.uniform(320, 370))
    return [_cat(neck, loop)]


def _seven(r: np.random.Generator) -> list[Stroke]:
    foot = (r.uniform(0.25, 0.5), 1.0)
    corner = (1.0, r.uniform(-0.03, 0.03))
    diag = _bezier(corner, ((corner[0] + foot[0]) / 2 + r.uniform(-0.1, 0.05), 0.5), foot, n=8)
    stroke = _cat(_poly((r.uniform(0.0, 0.1), r.uniform(0.0, 0.08))), diag)
    if r.random() < 0.2:  # a hook at the start of the bar
        stroke = _cat(_poly((0.0, r.uniform(0.1, 0.2))), stroke)
    strokes = [stroke]
    if r.random() < 0.25:  # the continental crossbar
        xm = (corner[0] + foot[0]) / 2
        strokes.append(_poly((xm - r.uniform(0.15, 0.25), 0.5), (xm + r.uniform(0.15, 0.25), 0.5)))
    return strokes


def _eight(r: np.random.Generator) -> list[Stroke]:
    if r.random() < 0.65:  # one continuous figure-eight stroke
        t = np.linspace(0, 2 * np.pi, 48) + r.uniform(-0.3, 0.3)
        width = np.where(np.cos(t) > 0, r.uniform(0.2, 0.32), r.uniform(0.26, 0.4))
        y = (0.5 - 0.5 * np.cos(t)) ** r.uniform(0.8, 1.25)
        return [np.stack([0.5 + width * np.sin(2 * t), y], axis=1)]
    waist = r.uniform(0.4, 0.52)
    a0 = r.uniform(60, 120)
    upper = _arc(0.5, waist / 2, r.uniform(0.2, 0.3), waist / 2, a0, a0 + 360)
    lower = _arc(0.5, (1 + waist) / 2, r.uniform(0.26, 0.38), (1 - waist) / 2, -a0, -a0 + 360)
    return [upper, lower]


def _nine(r: np.random.Generator) -> list[Stroke]:
    rx, ry = r.uniform(0.26, 0.4), r.uniform(0.2, 0.3)
    start = r.uniform(-20, 30)
    loop = _arc(0.5, ry, rx, ry, start, start - r.uniform(340, 380))
    right = (0.5 + rx, ry)
    if r.random() < 0.3:  # a stem that curls left at the bottom
        stem = _bezier(right, (right[0], 1.0), (r.uniform(0.2, 0.45), r.uniform(0.9, 1.0)), n=8)
    else:
        stem = _bezier(
            right, (right[0] + r.uniform(-0.1, 0.05), 0.65), (right[0] + r.uniform(-0.2, 0.05), 1.0)
        )
    return [_cat(loop, stem)]


SKELETONS: tuple[Callable[[np.random.Generator], list[Stroke]], ...] = (
    _zero,
    _one,
    _two,
    _three,
    _four,
    _five,
    _six,
    _seven,
    _eight,
    _nine,
)


def _distort(strokes: list[Stroke], r: np.random.Generator) -> list[Stroke]:
    """Pen lifts, per-stroke offsets, a smooth random warp, then slant, aspect and rotation."""
    curved = [i for i, s in enumerate(strokes) if len(s) >= 8]
    if curved and r.random() < 0.1:  # a pen lift: a short gap in one curved stroke
        i = curved[r.integers(len(curved))]
        cut = int(r.integers(2, len(strokes[i]) - 3))
        strokes = [*strokes[:i], strokes[i][:cut], strokes[i][cut + 2 :], *strokes[i + 1 :]]
    strokes = [s + r.normal(0.0, 0.03, size=2) for s in strokes]
    pts = np.concatenate(strokes)
    for _ in range(3):  # smooth warp: random low-frequency sinusoidal displacement fields
        freq = r.uniform(0.5, 1.5, size=2) * r.choice([-1, 1], size=2)
        phase = r.uniform(0, 2 * np.pi)
        direction = r.normal(size=2)
        wave = np.sin(2 * np.pi * (pts @ freq) + phase)[:, None]
        pts = pts + r.uniform(0.0, 0.07) * wave * direction / np.linalg.norm(direction)
    slant = np.clip(r.normal(0.15, 0.25), -0.4, 0.7)  # top leans right, as in most handwriting
    pts[:, 0] = (pts[:, 0] - 0.5) * r.uniform(0.65, 1.35) + slant * (0.5 - pts[:, 1])
    angle = np.radians(r.uniform(-15, 15))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    return np.split(pts, np.cumsum([len(s) for s in strokes])[:-1])


def _round_points(xy: np.ndarray) -> np.ndarray:
    """End points and sharp corners (turns over 30 degrees) of a polyline: where a pen leaves a round
    blob. Gentle turns are left to the plain joins, which is much faster than PIL's curved joints."""
    d = np.diff(xy, axis=0)
    cos = (d[:-1] * d[1:]).sum(1) / (np.linalg.norm(d[:-1], axis=1) * np.linalg.norm(d[1:], axis=1) + 1e-9)
    return np.concatenate([xy[:1], xy[1:-1][cos < np.cos(np.radians(30))], xy[-1:]])


def _render(strokes: list[Stroke], pens: np.ndarray) -> np.ndarray:
    """Draw strokes (pen widths in output pixels) fitted into the 20x20 box, then crop 28x28 around
    the ink's centre of mass."""
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    scale = (BOX - pens.max()) / max(float((hi - lo).max()), 1e-6) * SUPERSAMPLE
    centre = CANVAS * SUPERSAMPLE / 2
    img = Image.new("L", (CANVAS * SUPERSAMPLE,) * 2, 0)
    draw = ImageDraw.Draw(img)
    for s, pen in zip(strokes, pens, strict=True):
        xy = (s - (lo + hi) / 2) * scale + centre
        width = max(1, round(pen * SUPERSAMPLE))
        draw.line([tuple(p) for p in xy], fill=255, width=width)
        for x, y in _round_points(xy):
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    ink = np.asarray(img, dtype=np.float32)
    total = ink.sum()
    grid = np.arange(ink.shape[0], dtype=np.float32)
    cy, cx = (ink.sum(1) @ grid) / total, (ink.sum(0) @ grid) / total
    size = FIELD * SUPERSAMPLE
    top = int(np.clip(round(cy - size / 2), 0, ink.shape[0] - size))
    left = int(np.clip(round(cx - size / 2), 0, ink.shape[1] - size))
    crop = ink[top : top + size, left : left + size]
    small = crop.reshape(FIELD, SUPERSAMPLE, FIELD, SUPERSAMPLE).mean(axis=(1, 3))
    return np.rint(small).astype(np.uint8)


def draw_digits(labels: np.ndarray, seed_seq: np.random.SeedSequence) -> np.ndarray:
    """Draw one image (28, 28) uint8 per label with a generator seeded from `seed_seq`."""
    r = np.random.default_rng(seed_seq)
    out = np.empty((len(labels), FIELD, FIELD), dtype=np.uint8)
    for i, label in enumerate(labels):
        strokes = _distort(SKELETONS[int(label)](r), r)
        pens = r.uniform(1.5, 3.6) * r.uniform(0.8, 1.2, size=len(strokes))  # pen, and pressure per stroke
        out[i] = _render(strokes, pens)
    return out


def _draw_chunk(args: tuple[np.ndarray, np.random.SeedSequence]) -> np.ndarray:
    return draw_digits(*args)


def generate_mnist(
    root: Path, num_train: int = 20000, num_test: int = 4000, seed: int = 0, workers: int = 2
) -> None:
    """Write train/t10k images and labels as the four MNIST `.gz` IDX files into `root`.

    Labels are balanced over 0..9 and shuffled. The output depends only on the sizes and `seed`
    (work is split into fixed seeded chunks), not on `workers`, the number of processes used.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    splits = {"train": num_train, "test": num_test}
    jobs: list[tuple[np.ndarray, np.random.SeedSequence]] = []
    labels_by_split: dict[str, np.ndarray] = {}
    for split_id, (split, count) in enumerate(splits.items()):
        base = np.random.SeedSequence([seed, split_id])
        label_seq, *chunk_seqs = base.spawn(1 + -(-count // CHUNK))
        labels = np.random.default_rng(label_seq).permutation(np.arange(count) % 10).astype(np.uint8)
        labels_by_split[split] = labels
        jobs += [(labels[i * CHUNK : (i + 1) * CHUNK], s) for i, s in enumerate(chunk_seqs)]
    if workers > 1 and len(jobs) > 1:
        with Pool(min(workers, len(jobs))) as pool:
            chunks = list(tracked(pool.imap(_draw_chunk, jobs), num_train + num_test, size=len))
    else:
        chunks = list(tracked(map(_draw_chunk, jobs), num_train + num_test, size=len))
    n_train_chunks = -(-num_train // CHUNK)
    images = {"train": chunks[:n_train_chunks], "test": chunks[n_train_chunks:]}
    for split in splits:
        stacked = np.concatenate(images[split]) if images[split] else np.zeros((0, FIELD, FIELD), np.uint8)
        write_idx(root / f"{MNIST_FILES[f'{split}_images']}.gz", stacked)
        write_idx(root / f"{MNIST_FILES[f'{split}_labels']}.gz", labels_by_split[split])
