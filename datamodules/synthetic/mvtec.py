"""A procedurally drawn "hazelnut" category written in the exact MVTec AD layout.

Good nuts are textured, shaded brown ellipsoids with a lighter tip, randomly rotated and shifted on
a dark background. Defects (crack, cut, hole, print) are drawn into the nut with their binary masks
in `ground_truth/<type>/<stem>_mask.png` (0/255), so `datamodules.mvtec_format` reads this exactly
as it reads the real dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datamodules.synthetic.progress import tracked

DEFECT_TYPES = ("crack", "cut", "hole", "print")


@dataclass(frozen=True)
class _Nut:
    """Where the nut lies: pixel-grid masks and its pose (centre, half-axes, angle as image fractions)."""

    outline: np.ndarray  # bool (size, size): inside the shell
    body: np.ndarray  # bool: well inside the shell, where surface defects start
    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float
    size: int


def generate_mvtec(
    root: Path,
    *,
    num_train: int = 400,
    num_test_good: int = 40,
    num_test_per_defect: int = 20,
    size: int = 256,
    seed: int = 0,
) -> None:
    """Write `train/good`, `test/good`, `test/<defect>` and `ground_truth/<defect>` PNGs under `root`.

    Deterministic in `seed`: every image draws from its own seed, so the two worker processes may
    finish in any order.
    """
    root = Path(root)
    jobs: list[tuple[Path, Path | None, str, int, int]] = []
    for split, kind, count in [("train", "good", num_train), ("test", "good", num_test_good)] + [
        ("test", d, num_test_per_defect) for d in DEFECT_TYPES
    ]:
        (root / split / kind).mkdir(parents=True, exist_ok=True)
        if kind != "good":
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image_path = root / split / kind / f"{i:03d}.png"
            mask_path = None if kind == "good" else root / "ground_truth" / kind / f"{i:03d}_mask.png"
            stream = (0 if split == "train" else 1 + (["good", *DEFECT_TYPES].index(kind))) * 100_000 + i
            jobs.append((image_path, mask_path, kind, size, _child_seed(seed, stream)))
    if len(jobs) < 64:
        for _ in tracked(map(_write_one, jobs), len(jobs)):
            pass
    else:
        with Pool(2) as pool:
            for _ in tracked(pool.imap_unordered(_write_one, jobs, chunksize=16), len(jobs)):
                pass


def draw_hazelnut(rng: np.random.Generator, size: int, defect: str = "good") -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image (size, size, 3) and its bool defect mask (all False for "good")."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    cx, cy = 0.5 + rng.uniform(-0.04, 0.04, size=2)
    a, b = 0.34 * rng.uniform(0.93, 1.05), 0.29 * rng.uniform(0.93, 1.05)
    # Nut coordinates: u along the long axis (tip at u = +1), v across; the tip narrows the outline.
    ca, sa = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * ca + (yy - cy) * sa) / a
    v = (-(xx - cx) * sa + (yy - cy) * ca) / b
    v = v / (1.0 - 0.22 * np.clip(u, 0, None) ** 2)
    rho2 = u**2 + v**2
    inside = rho2 < 1.0
    z = np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0))

    # Shading: Lambert from the upper left plus a soft specular spot, with the ellipsoid normal.
    nx, ny = (xx - cx) / a, (yy - cy) / b
    light = np.array([-0.45, -0.55, 0.70])
    lambert = np.clip(nx * light[0] + ny * light[1] + z * light[2], 0, 1)
    shade = 0.30 + 0.75 * lambert
    spec = np.exp(-(((nx + 0.35) ** 2 + (ny + 0.42) ** 2) / 0.05)) * 0.25

    # Texture: smooth blotches + fine streaks running from the tip along the shell.
    blotch = _value_noise(rng, size, 6) * 0.6 + _value_noise(rng, size, 20) * 0.4
    theta = np.arctan2(v, u - 1.0)
    streak_phase = rng.uniform(0, 2 * np.pi, size=3)
    streaks = (
        np.sin(theta * 37 + streak_phase[0]) * 0.5
        + np.sin(theta * 83 + streak_phase[1] + 3 * blotch) * 0.3
        + np.sin(theta * 151 + streak_phase[2]) * 0.2
    )
    base = np.array([150, 95, 52], np.float32) * rng.uniform(0.9, 1.1, size=3)
    grain = _value_noise(rng, size, max(8, size // 4))
    tone = 1.0 + 0.18 * (blotch - 0.5) + 0.07 * streaks + 0.12 * (grain - 0.5)
    # The tip is a paler, greyish fuzzy cap.
    tip = np.clip((u - 0.62) / 0.3, 0, 1) ** 1.5 * np.clip(1.2 - np.abs(v) * 1.1, 0, 1)
    tip_colour = np.array([180, 150, 115], np.float32)
    nut = (
        base * tone[..., None] * (1 - tip[..., None])
        + tip_colour * (0.85 + 0.3 * blotch)[..., None] * tip[..., None]
    )
    nut = nut * shade[..., None] + 255 * spec[..., None]

    background = 14 + 10 * _value_noise(rng, size, 4) + rng.normal(0, 2.0, (size, size))
    edge = np.clip((1.0 - rho2) / 0.06, 0, 1) * inside  # soft rim, darkened like a curved edge
    edge = edge[..., None]
    img = background[..., None] * (1 - edge) + nut * edge * (0.6 + 0.4 * edge)

    mask = np.zeros((size, size), bool)
    if defect != "good":
        nut_pose = _Nut(inside, inside & (rho2 < 0.8), (cx, cy), (a, b), angle, size)
        img, mask = _DEFECTS[defect](rng, img, nut_pose)
    img = img + rng.normal(0, 2.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _crack(rng: np.random.Generator, img: np.ndarray, nut: _Nut) -> tuple[np.ndarray, np.ndarray]:
    """Thin dark branching lines: a random walk with side branches inside the nut."""
    size, body = nut.size, nut.body
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    ys, xs = np.nonzero(body)
    start = rng.integers(len(xs))
    width = max(1, round(size / 128))
    branches = [(float(xs[start]), float(ys[start]), rng.uniform(0, 2 * np.pi), 14)]
    while branches:
        x, y, heading, steps = branches.pop()
        for _ in range(steps):
            heading += rng.normal(0, 0.35)
            step = size * rng.uniform(0.012, 0.025)
            nx, ny = x + np.cos(heading) * step, y + np.sin(heading) * step
            if not body[min(size - 1, max(0, round(ny))), min(size - 1, max(0, round(nx)))]:
                # Leaving the shell: turn back towards the centre instead of being clipped away.
                heading = np.arctan2(nut.centre[1] * size - y, nut.centre[0] * size - x) + rng.normal(0, 0.5)
                nx, ny = x + np.cos(heading) * step, y + np.sin(heading) * step
            draw.line([(x, y), (nx, ny)], fill=255, width=width)
            x, y = nx, ny
            if steps > 5 and rng.random() < 0.12:
                branches.append((x, y, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), steps // 2))
    line = np.asarray(layer) > 0
    line &= body
    soft = np.asarray(Image.fromarray((line * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7)))
    darkness = rng.uniform(0.35, 0.55)
    img = img * (1 - (1 - darkness) * (soft[..., None] / 255.0))
    return img, line


def _cut(rng: np.random.Generator, img: np.ndarray, nut: _Nut) -> tuple[np.ndarray, np.ndarray]:
    """A wedge notch cut from the rim: the material is gone and the cut face shows pale kernel."""
    (cx, cy), (a, b), angle, size = nut.centre, nut.axes, nut.angle, nut.size
    phi = rng.uniform(0, 2 * np.pi)
    # A rim point in nut coordinates, mapped to pixels.
    pu, pv = np.cos(phi), np.sin(phi)
    ca, sa = np.cos(angle), np.sin(angle)
    rim = np.array([cx + pu * a * ca - pv * b * sa, cy + pu * a * sa + pv * b * ca]) * size
    centre = np.array([cx, cy]) * size
    inward = (centre - rim) / np.linalg.norm(centre - rim)
    side = np.array([-inward[1], inward[0]])
    depth, half = size * rng.uniform(0.07, 0.13), size * rng.uniform(0.05, 0.09)
    out = rim - inward * size * 0.05
    poly = [
        tuple(out + side * half * 1.3),
        tuple(rim + inward * depth + side * rng.normal(0, 0.01) * size),
        tuple(out - side * half * 1.3),
    ]
    layer = Image.new("L", (size, size), 0)
    ImageDraw.Draw(layer).polygon(poly, fill=255)
    notch = np.asarray(layer) > 0
    mask = notch & nut.outline
    # Cut face: a pale band along the notch edge inside the nut.
    grown = (
        np.asarray(
            Image.fromarray((notch * 255).astype(np.uint8)).filter(
                ImageFilter.MaxFilter(2 * max(1, size // 64) + 1)
            )
        )
        > 0
    )
    face = grown & ~notch & nut.outline
    background = 16 + rng.normal(0, 2.0, (size, size))
    img = img.copy()
    img[mask] = background[mask][:, None]
    img[face] = img[face] * 0.45 + np.array([205, 180, 140]) * 0.55
    return img, mask | face


def _body_point(rng: np.random.Generator, nut: _Nut) -> tuple[int, int]:
    """(y, x) of a pixel of the nut's body, drawn uniformly: where a hole or a print is centred."""
    ys, xs = np.nonzero(nut.body)
    k = rng.integers(len(xs))
    return ys[k], xs[k]


def _hole(rng: np.random.Generator, img: np.ndarray, nut: _Nut) -> tuple[np.ndarray, np.ndarray]:
    """A dark round hole with a lighter, slightly irregular rim."""
    size = nut.size
    cy, cx = _body_point(rng, nut)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    radius = size * rng.uniform(0.025, 0.05)
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6)) + 0.06 * np.sin(5 * ang + rng.uniform(0, 6))
    d = np.hypot(xx - cx, yy - cy) / (radius * wobble)
    hole = d < 1.0
    rim = (d >= 1.0) & (d < 1.45)
    img = img.copy()
    depth = np.clip(1.0 - d, 0, 1)
    img[hole] = img[hole] * (0.25 - 0.15 * depth[hole, None]) + 8
    img[rim] = img[rim] * 0.55 + np.array([200, 165, 120]) * 0.45
    return img, hole | rim


def _print(rng: np.random.Generator, img: np.ndarray, nut: _Nut) -> tuple[np.ndarray, np.ndarray]:
    """A coloured ink blot: an irregular blob of semi-transparent ink that keeps the texture."""
    size = nut.size
    cy, cx = _body_point(rng, nut)
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(4, 9)):
        ox, oy = rng.normal(0, size * 0.03, size=2)
        r = size * rng.uniform(0.015, 0.04)
        draw.ellipse([cx + ox - r, cy + oy - r, cx + ox + r, cy + oy + r], fill=255)
    blob = np.asarray(layer.filter(ImageFilter.GaussianBlur(size / 200))) > 127
    blob &= nut.outline
    ink = np.array([[95, 40, 90], [60, 45, 110], [120, 45, 40], [40, 60, 50]], np.float32)[rng.integers(4)]
    alpha = rng.uniform(0.55, 0.8)
    img = img.copy()
    luminance = img[blob].mean(axis=1, keepdims=True) / 120.0
    img[blob] = img[blob] * (1 - alpha) + ink * luminance * alpha
    return img, blob


_DEFECTS = {"crack": _crack, "cut": _cut, "hole": _hole, "print": _print}


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random `cells` x `cells` grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), np.float32) / 255.0


def _child_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _write_one(job: tuple[Path, Path | None, str, int, int]) -> None:
    image_path, mask_path, kind, size, seed = job
    img, mask = draw_hazelnut(np.random.default_rng(seed), size, kind)
    Image.fromarray(img).save(image_path, compress_level=1)
    if mask_path is not None:
        Image.fromarray((mask * 255).astype(np.uint8)).save(mask_path, compress_level=1)
