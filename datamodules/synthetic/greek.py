"""Procedurally hand-drawn lowercase Greek letters written as class-per-folder PNGs.

The embedded symbol set of `task=embed` (the course's Greek letters in its format):
`root/train/<class>/<class>_NNN.png` written by one "hand" and `root/test/<class>/<class>_test_NNN.png`
by another, 8-bit grayscale, `size` x `size` pixels (133 by default), dark pencil strokes on light,
slightly noisy paper.

Each letter is a few pen strokes, each a smooth curve (Catmull-Rom spline) through control points in
a box of about [-1, 1]^2 (y down). A hand has a style: its own fixed nudge of every control point
(drawn once per hand and letter), a slant, a pen width, a size and how much it jitters from one
sample to the next. Every sample then gets its control points jittered, a random slant, rotation and
aspect around the hand's, a pen pressure that varies along the stroke, and pencil grain. The ink is
fitted into a box of `size * HAND.fit` pixels (the course transform keeps the central 100 of 133
pixels) and placed near the centre, drawn at 4x and downsampled (anti-aliasing), on paper with a
faint gradient and noise, blurred a little.

Every image depends only on (seed, hand, class name, index): adding classes or images leaves the
others unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datamodules.synthetic.progress import advance, announce

Points = list[tuple[float, float]]
SUPERSAMPLE = 4
#: the share of the image the course transform keeps (a 28 px crop at scale 36/128: 99.6 of 133 px)
CROP = 28 / (36 / 128) / 133

#: control points of each letter's strokes (x right, y down; x-height about [-0.55, 0.55], ascenders
#: and descenders to +-1). Several variants per letter are different ways of writing it.
# fmt: off
LETTERS: dict[str, list[list[Points]]] = {
    "alpha": [
        # the fish: from the upper right down through the crossing, round the bowl, out to a tail
        [[(0.8, -0.5), (0.5, -0.05), (0.2, 0.35), (-0.25, 0.5), (-0.7, 0.25), (-0.72, -0.25),
          (-0.3, -0.5), (0.1, -0.3), (0.45, 0.2), (0.65, 0.45), (0.9, 0.5)]],
        # the same, written more upright with a rounder bowl
        [[(0.7, -0.55), (0.5, -0.1), (0.25, 0.3), (-0.15, 0.55), (-0.6, 0.4), (-0.75, -0.05),
          (-0.5, -0.45), (-0.05, -0.45), (0.35, 0.05), (0.6, 0.45), (0.85, 0.55)]],
    ],
    "beta": [
        # one stroke: up the stem from the descender, over the two bowls, back to the stem
        [[(-0.45, 1.0), (-0.42, 0.3), (-0.4, -0.45), (-0.2, -0.9), (0.15, -0.98), (0.42, -0.75),
          (0.35, -0.38), (-0.05, -0.18), (0.4, -0.05), (0.52, 0.35), (0.25, 0.65), (-0.15, 0.62),
          (-0.4, 0.45)]],
        # stem first, then the bowls as a second stroke
        [[(-0.42, -0.6), (-0.42, 0.2), (-0.48, 1.0)],
         [(-0.42, -0.6), (-0.15, -0.95), (0.25, -0.95), (0.42, -0.62), (0.1, -0.25), (-0.1, -0.2),
          (0.35, -0.05), (0.5, 0.32), (0.25, 0.62), (-0.1, 0.65), (-0.42, 0.5)]],
    ],
    "gamma": [
        # a V whose right arm runs on down into the descender
        [[(-0.6, -0.6), (-0.35, -0.5), (-0.12, -0.15), (0.0, 0.15)],
         [(0.55, -0.7), (0.3, -0.25), (0.0, 0.15), (-0.18, 0.55), (-0.3, 0.95)]],
        # one stroke with a small loop at the bottom of the V
        [[(-0.6, -0.55), (-0.3, -0.45), (-0.05, 0.0), (0.05, 0.45), (-0.05, 0.9), (-0.2, 0.75),
          (0.0, 0.3), (0.3, -0.2), (0.55, -0.65)]],
    ],
    "delta": [
        [[(0.45, -0.82), (0.05, -0.95), (-0.3, -0.78), (-0.1, -0.48), (0.35, -0.2), (0.5, 0.2),
          (0.35, 0.55), (-0.05, 0.62), (-0.45, 0.4), (-0.45, 0.0), (-0.15, -0.25), (0.15, -0.35)]],
    ],
    "epsilon": [
        # the upper arc, a small turn back at the middle, the larger lower arc
        [[(0.45, -0.45), (0.05, -0.56), (-0.32, -0.42), (-0.32, -0.15), (-0.08, -0.03), (0.02, 0.02),
          (-0.12, 0.06), (-0.42, 0.25), (-0.35, 0.52), (0.05, 0.6), (0.45, 0.42)]],
    ],
    "lambda": [
        [[(-0.55, -0.95), (-0.25, -0.8), (-0.05, -0.4), (0.25, 0.3), (0.45, 0.8), (0.62, 0.9)],
         [(0.0, -0.25), (-0.3, 0.3), (-0.55, 0.85)]],
    ],
    "mu": [
        [[(-0.45, -0.5), (-0.45, 0.25), (-0.5, 1.0)],
         [(-0.45, 0.15), (-0.25, 0.48), (0.1, 0.48), (0.35, 0.15), (0.38, -0.5)],
         [(0.38, -0.5), (0.38, 0.25), (0.55, 0.5), (0.72, 0.42)]],
    ],
    "pi": [
        [[(-0.75, -0.35), (-0.5, -0.5), (0.1, -0.5), (0.8, -0.55)],
         [(-0.28, -0.5), (-0.3, 0.05), (-0.42, 0.55)],
         [(0.32, -0.52), (0.3, 0.2), (0.45, 0.55), (0.62, 0.5)]],
    ],
    "rho": [
        [[(-0.35, 1.0), (-0.35, 0.35), (-0.3, -0.15), (-0.05, -0.5), (0.35, -0.45), (0.5, -0.05),
          (0.3, 0.4), (-0.05, 0.48), (-0.32, 0.25)]],
    ],
    "sigma": [
        [[(0.85, -0.5), (0.3, -0.5), (-0.2, -0.42), (-0.55, -0.05), (-0.45, 0.4), (-0.05, 0.55),
          (0.35, 0.35), (0.45, -0.05), (0.2, -0.42)]],
    ],
    "tau": [
        [[(-0.7, -0.35), (-0.4, -0.5), (0.2, -0.5), (0.7, -0.55)],
         [(0.02, -0.5), (-0.02, 0.1), (0.1, 0.5), (0.35, 0.55)]],
    ],
    "omega": [
        [[(-0.45, -0.5), (-0.72, -0.05), (-0.6, 0.45), (-0.22, 0.45), (0.0, 0.0), (0.22, 0.45),
          (0.6, 0.45), (0.72, -0.05), (0.45, -0.5)]],
    ],
}
# fmt: on
CLASSES = list(LETTERS)
DEFAULT_CLASSES = ["alpha", "beta", "gamma"]


@dataclass(frozen=True)
class Hand:
    """How one writer draws. Lengths in pixels are for a 133 px image and scale with `size`."""

    name: str
    width: float  # mean pen width (px)
    width_var: float  # relative spread of the pen width between samples
    slant: float  # mean horizontal shear (x += slant * -y): > 0 leans right
    slant_var: float
    rotate_var: float  # degrees (standard deviation)
    aspect: float  # mean width / height stretch
    style: float  # this hand's fixed nudge of every control point (box units, std)
    jitter: float  # per-sample nudge of every control point (box units, std)
    fit: tuple[float, float]  # the larger side of the ink box, as a share of the image (range)
    shift: float  # centre offset (px, std)
    paper: tuple[float, float]  # paper grey level (range)
    ink: tuple[float, float]  # ink grey level (range)
    variant_bias: float  # > 0.5: prefers the first way of writing each letter, < 0.5 the others


# fmt: off
#: pencil on grey paper, thin even strokes, leaning right: the course's training letters
TRAIN_HAND = Hand(
    name="train", width=4.0, width_var=0.12, slant=0.18, slant_var=0.06, rotate_var=3.0, aspect=1.08,
    style=0.035, jitter=0.04, fit=(0.60, 0.68), shift=3.0, paper=(208, 222), ink=(40, 62),
    variant_bias=0.7,
)
#: another writer: a broader, darker pen, leaning further right, narrower, jittering more, whiter paper
TEST_HAND = Hand(
    name="test", width=6.5, width_var=0.18, slant=0.30, slant_var=0.08, rotate_var=4.0, aspect=0.94,
    style=0.05, jitter=0.055, fit=(0.54, 0.66), shift=4.0, paper=(226, 242), ink=(22, 45),
    variant_bias=0.7,
)
# fmt: on


def generate_greek(
    root: Path,
    classes: list[str] | tuple[str, ...] = tuple(DEFAULT_CLASSES),
    per_class_train: int = 9,
    per_class_test: int = 10,
    size: int = 133,
    seed: int = 0,
) -> None:
    """Write `root/train/<class>/<class>_NNN.png` (TRAIN_HAND) and `root/test/<class>/<class>_test_NNN.png`
    (TEST_HAND), numbered from 001. `classes` are names of LETTERS."""
    check_params(classes, per_class_train, per_class_test, size)
    announce(len(classes) * (per_class_train + per_class_test))
    for split, hand, count in (("train", TRAIN_HAND, per_class_train), ("test", TEST_HAND, per_class_test)):
        suffix = "" if split == "train" else "_test"
        for name in classes:
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = draw_letter(name, hand, size, seed, i)
                Image.fromarray(image, "L").save(folder / f"{name}{suffix}_{i + 1:03d}.png")
                advance()


def check_params(classes: object, per_class_train: object, per_class_test: object, size: object) -> None:
    """ValueError naming the first bad parameter (the task turns it into a ConfigError)."""
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes={classes!r}: give a non-empty list of letters from {CLASSES}")
    unknown = [c for c in classes if c not in LETTERS]  # type: ignore[union-attr]
    if unknown:
        raise ValueError(f"classes {unknown} are not drawable letters; choose from {CLASSES}")
    if len(set(classes)) != len(classes):  # type: ignore[arg-type]
        raise ValueError(f"classes={list(classes)} lists a letter twice")  # type: ignore[call-overload]
    for key, value, low in (("per_class_train", per_class_train, 1), ("per_class_test", per_class_test, 0),
                            ("size", size, 32)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key}={value!r} must be an integer >= {low}")


def _rng(*keys: int | str) -> np.random.Generator:
    """A generator seeded by the keys (strings hashed stably, unlike Python's hash())."""
    return np.random.default_rng([k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys])


def _spline(points: np.ndarray, per_segment: int = 24) -> np.ndarray:
    """A Catmull-Rom curve through `points` (K, 2), sampled densely; end points repeated."""
    if len(points) < 3:
        t = np.linspace(0, 1, per_segment * max(1, len(points) - 1))[:, None]
        return points[0] * (1 - t) + points[-1] * t
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        a, b, c = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
        out.append(p1 + 0.5 * (a * t + b * t**2 + c * t**3))
    out.append(points[-1:])
    return np.concatenate(out)


def _smooth_noise(rng: np.random.Generator, n: int, knots: int = 5) -> np.ndarray:
    """A slowly varying random curve over n samples, values about N(0, 1)."""
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), rng.normal(size=knots))


def letter_strokes(
    name: str, hand: Hand, seed: int, index: int
) -> tuple[list[np.ndarray], np.random.Generator]:
    """The sample's strokes as dense (M, 2) curves in box units after style, jitter and the affine map,
    and the generator that continues the sample's randomness (for rendering)."""
    variants = LETTERS[name]
    style_rng = _rng(seed, hand.name, name, "style")
    rng = _rng(seed, hand.name, name, index)
    weights = np.array([hand.variant_bias] + [(1 - hand.variant_bias) / max(1, len(variants) - 1)]
                       * (len(variants) - 1)) if len(variants) > 1 else np.ones(1)  # fmt: skip
    variant = int(rng.choice(len(variants), p=weights / weights.sum()))
    # the hand's own way of writing this letter: one fixed nudge per control point (per variant)
    styles = [[style_rng.normal(0, hand.style, (len(s), 2)) for s in v] for v in variants]
    slant = hand.slant + rng.normal(0, hand.slant_var)
    angle = np.radians(rng.normal(0, hand.rotate_var))
    aspect = hand.aspect * np.exp(rng.normal(0, 0.06))
    cos, sin = np.cos(angle), np.sin(angle)
    affine = np.array([[cos, -sin], [sin, cos]]) @ np.array([[aspect, -slant], [0.0, 1.0]])
    strokes = []
    warp = _warp(rng, hand.jitter)
    for points, style in zip(variants[variant], styles[variant], strict=True):
        p = np.asarray(points, dtype=np.float64) + style
        p = p + warp(p) + rng.normal(0, 0.4 * hand.jitter, p.shape)
        strokes.append(_spline(p) @ affine.T)
    return strokes, rng


def _warp(rng: np.random.Generator, amplitude: float, waves: int = 3) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth random displacement field over the letter box (a few long sine waves): neighbouring
    control points move together, so the letter bends rather than zig-zags."""
    angle = rng.uniform(0, 2 * np.pi, waves)
    freq = rng.uniform(1.2, 2.6, waves)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    phase = rng.uniform(0, 2 * np.pi, waves)
    amp = rng.normal(0, amplitude * np.sqrt(2.0 / waves), (waves, 2))

    def warp(p: np.ndarray) -> np.ndarray:
        return np.sin(p @ freq.T + phase) @ amp

    return warp


def draw_letter(name: str, hand: Hand, size: int = 133, seed: int = 0, index: int = 0) -> np.ndarray:
    """One sample of letter `name` by `hand`: uint8 (size, size), dark ink on light paper."""
    strokes, rng = letter_strokes(name, hand, seed, index)
    unit = size / 133.0
    every = np.concatenate(strokes)
    lo, hi = every.min(axis=0), every.max(axis=0)
    scale = size * rng.uniform(*hand.fit) / float(max(hi - lo))
    width = hand.width * unit * np.exp(rng.normal(0, hand.width_var))
    # off centre a little, but the ink (with the pen's width) stays inside the central CROP share
    room = np.maximum(0.0, (CROP * size - (hi - lo) * scale - width) / 2 - unit)
    centre = size / 2 + np.clip(rng.normal(0, hand.shift * unit, 2), -room, room)
    s = SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        xy = ((stroke - (lo + hi) / 2) * scale + centre) * s
        # pen pressure: thinner at the ends (the pen lands and lifts), varying along the stroke
        n = len(xy)
        ends = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / max(2.0, 0.08 * n)) * 0.4 + 0.6
        radius = 0.5 * s * width * ends * np.clip(1 + 0.15 * _smooth_noise(rng, n), 0.6, 1.4)
        for (x0, y0), (x1, y1), r in zip(xy[:-1], xy[1:], radius[1:], strict=True):
            draw.line([(x0, y0), (x1, y1)], fill=255, width=max(1, round(2 * r)))
            draw.ellipse([x1 - r, y1 - r, x1 + r, y1 + r], fill=255)
    cover = np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0
    # pencil grain: the ink is not uniformly dark
    cover *= np.clip(1.0 - np.abs(rng.normal(0, 0.12, cover.shape)), 0.5, 1.0)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    paper = rng.uniform(*hand.paper) + rng.normal(0, 4) * xx + rng.normal(0, 4) * yy
    ink = rng.uniform(*hand.ink)
    image = paper * (1 - cover) + ink * cover + rng.normal(0, 2.0, cover.shape)
    out = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8), "L")
    return np.asarray(out.filter(ImageFilter.GaussianBlur(0.6 * unit)))
