"""Procedurally drawn people written in the original LSP format (the `pose` task's embedded default).

Each image shows one articulated figure: 14 joints in LSP order posed within joint-angle limits,
tapered limbs and torso in clothing colours, a head with a face (front-facing) or hair (back-facing),
on a cluttered textured background. Left and right are distinguishable in principle from the facing
and from depth: a random body turn puts one side nearer, its limbs drawn in front of the torso and
lit, the far side behind and shaded (both cues are mirror-consistent, so flip-with-swap augmentation
stays valid). A joint covered by a body part drawn on top of it is flagged invisible. No markers.

Two levels: `hard` (people anywhere at 60-92 % of the frame; 4-21 clutter shapes per background, a
fifth of them skin-coloured distractor limbs) and `easy` (the same people and poses framed like LSP's
person-centred crops, at 84-92 % of the frame near the centre, in calmer scenes: background colour
blobs at a third of their contrast, at most three clutter shapes and no distractor limbs). `hard` is
the original set, unchanged for a given seed.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageDraw, ImageFilter

from datamodules.synthetic import LEVELS
from datamodules.synthetic.progress import tracked

SUPERSAMPLE = 2  # draw at 2x and box-downsample: cheap antialiasing
PARTS = ("torso", "head", "r_uarm", "r_larm", "l_uarm", "l_larm", "r_thigh", "r_shin", "l_thigh", "l_shin")
_PID = {name: i + 1 for i, name in enumerate(PARTS)}  # 0 = background in the part-label buffer
# The body parts each LSP joint belongs to: a joint is visible when the topmost part over it is one of these.
JOINT_OWNERS = (
    ("r_shin",), ("r_thigh", "r_shin"), ("torso", "r_thigh"), ("torso", "l_thigh"), ("l_thigh", "l_shin"),
    ("l_shin",), ("r_larm",), ("r_uarm", "r_larm"), ("torso", "r_uarm"), ("torso", "l_uarm"),
    ("l_uarm", "l_larm"), ("l_larm",), ("torso", "head"), ("head",),
)  # fmt: skip
SKIN_TONES = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                       [92, 56, 30]], dtype=np.float64)  # fmt: skip


def generate_lsp(root: Path, num_images: int = 2000, seed: int = 0, level: str = "hard") -> None:
    """Write `num_images` figures as original LSP into `root`: `joints.mat` (3x14xN, 0 = visible) + JPEGs."""
    if level not in LEVELS:
        raise ValueError(f"data.synthetic.level={level!r}; expected one of {LEVELS}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(root, seed, i, level) for i in range(num_images)]
    workers = min(len(os.sched_getaffinity(0)), 8)
    if num_images < 64 or workers < 2:
        results = list(tracked(map(_render_and_save, jobs), num_images))
    else:
        with multiprocessing.Pool(workers) as pool:
            results = list(tracked(pool.imap(_render_and_save, jobs, chunksize=32), num_images))
    joints = np.zeros((3, 14, num_images), dtype=np.float64)
    for i, (xy, visible) in enumerate(results):
        joints[:2, :, i] = xy.T
        joints[2, :, i] = (~visible).astype(np.float64)  # original LSP: 0 = visible
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints})


def render_person(
    rng: np.random.Generator, level: str = "hard"
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """Draw one image; return (RGB image, joints (14, 2) pixel xy, visible (14,) bool)."""
    height = int(rng.integers(160, 261))
    width = int(np.clip(round(height * np.exp(rng.uniform(np.log(0.6), np.log(1.45)))), 120, 320))
    body = _sample_body(rng)
    pts = body["joints"]
    lo, hi = pts.min(axis=0) - 0.25, pts.max(axis=0) + 0.25  # margin for limb widths and the head
    fill = rng.uniform(0.6, 0.92)  # share of the frame the person fills
    if level == "easy":  # framed like an LSP crop: large, near the centre (the same draws as hard)
        fill = 0.84 + (fill - 0.6) * 0.25
    scale = fill * min(width / (hi[0] - lo[0]), height / (hi[1] - lo[1]))
    offset = np.array([rng.uniform(-lo[0] * scale, width - hi[0] * scale),
                       rng.uniform(-lo[1] * scale, height - hi[1] * scale)])  # fmt: skip
    if level == "easy":
        centred = np.array([width - (hi[0] + lo[0]) * scale, height - (hi[1] + lo[1]) * scale]) / 2
        offset = centred + (offset - centred) * 0.3
    s = SUPERSAMPLE
    img = _background(rng, width * s, height * s, level == "easy")
    label = Image.new("L", img.size, 0)
    joints = pts * scale + offset
    _draw_body(img, label, rng, body, joints * s, scale * s)
    visible = np.zeros(14, dtype=bool)
    lab = np.asarray(label)
    for j, owners in enumerate(JOINT_OWNERS):
        x, y = (joints[j] * s).astype(int)
        top = lab[np.clip(y, 0, lab.shape[0] - 1), np.clip(x, 0, lab.shape[1] - 1)]
        inside = 0 <= joints[j, 0] < width and 0 <= joints[j, 1] < height
        visible[j] = inside and (top == 0 or top in {_PID[o] for o in owners})
    img = img.reduce(s)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(img, dtype=np.float32)
    noise = rng.standard_normal(arr.shape, dtype=np.float32) * rng.uniform(1, 7)
    arr = arr * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20) + noise
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)), joints.astype(np.float64), visible


def _render_and_save(job: tuple[Path, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    root, seed, index, level = job
    img, joints, visible = render_person(np.random.default_rng([seed, index]), level)
    img.save(root / "images" / f"im{index + 1:04d}.jpg", quality=90)
    return joints, visible


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.deg2rad(rng.uniform(lo, hi)))


def _sample_body(rng: np.random.Generator) -> dict:
    """A pose in torso-length units: pelvis at the origin, y down; joint angles within human limits."""
    lean = _deg(rng, -75, 75) if rng.random() < 0.15 else float(np.deg2rad(rng.normal(0, 12)))
    down = np.array([np.sin(lean), np.cos(lean)])
    lateral = np.array([np.cos(lean), -np.sin(lean)])  # image-right when upright
    front = rng.random() < 0.75
    right_sign = -1.0 if front else 1.0  # a front-facing person's right side is on the image's left
    turn = rng.uniform(-1, 1)  # body yaw: narrows the body; the side it points to is nearer the camera
    narrow = 1 - 0.35 * abs(turn)
    shoulder_c = -down * 1.0
    neck = shoulder_c - down * 0.08
    joints = np.zeros((14, 2))
    for side, sign in (("r", right_sign), ("l", -right_sign)):
        shoulder = shoulder_c + sign * lateral * 0.4 * narrow
        hip = sign * lateral * 0.2 * narrow

        def direction(angle: float, sign: float = sign) -> np.ndarray:
            return down * np.cos(angle) + sign * lateral * np.sin(angle)  # 0 = hanging, >0 = outward

        if rng.random() < 0.3:  # arm across the body: in front of or behind the torso, by depth order
            upper_arm = _deg(rng, -60, 0)
            lower_arm = upper_arm - _deg(rng, 20, 120)
        else:
            upper_arm = _deg(rng, -20, 170)
            lower_arm = upper_arm + np.clip(np.deg2rad(rng.normal(25, 55)), -2.6, 2.6)
        elbow = shoulder + direction(upper_arm) * 0.58 * rng.uniform(0.7, 1.0)
        wrist = elbow + direction(lower_arm) * 0.52 * rng.uniform(0.7, 1.0)
        thigh = _deg(rng, 25, 95) if rng.random() < 0.15 else np.deg2rad(np.clip(rng.normal(8, 12), -25, 60))
        knee = hip + direction(thigh) * 0.85 * rng.uniform(0.7, 1.0)
        bend = _deg(rng, -110, 110) if rng.random() < 0.3 else np.deg2rad(rng.normal(0, 15))
        ankle = knee + direction(thigh + bend) * 0.8 * rng.uniform(0.75, 1.0)
        # ankle, knee, hip, wrist, elbow, shoulder
        idx = (0, 1, 2, 6, 7, 8) if side == "r" else (5, 4, 3, 11, 10, 9)
        joints[list(idx)] = [ankle, knee, hip, wrist, elbow, shoulder]
    tilt = np.deg2rad(rng.normal(0, 12))
    up = -(down * np.cos(tilt) + lateral * np.sin(tilt))
    joints[12] = neck
    joints[13] = neck + up * 0.52
    near = "r" if np.sign(turn) == right_sign else "l"
    return {"joints": joints, "lateral": lateral, "up": up, "front": front, "turn": turn, "near": near,
            "right_sign": right_sign}  # fmt: skip


def _clothes(rng: np.random.Generator) -> dict[str, np.ndarray]:
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.08)
    shirt = rng.uniform(20, 235, 3)
    long_sleeves = rng.random() < 0.35
    pants = rng.uniform(10, 120, 3) if rng.random() < 0.6 else rng.uniform(20, 235, 3)
    return {
        "skin": skin,
        "shirt": shirt,
        "uarm": shirt if long_sleeves or rng.random() < 0.6 else skin,
        "larm": shirt if long_sleeves else skin,
        "pants": pants,
        "shin": pants if rng.random() < 0.5 else skin,
        "shoe": rng.uniform(0, 255, 3) * rng.uniform(0.2, 1.0),
        "hair": rng.uniform(10, 120) * np.array([1.0, 0.8, 0.6]),
    }


def _draw_body(img: Image.Image, label: Image.Image, rng: np.random.Generator, body: dict,
               j: np.ndarray, unit: float) -> None:  # fmt: skip
    """Draw the figure in depth order: far limbs, torso, head, near limbs; mirror every shape into `label`."""
    col = _clothes(rng)
    far_shade = 1 - 0.3 * abs(body["turn"]) - 0.05
    draw, ldraw = ImageDraw.Draw(img), ImageDraw.Draw(label)
    lat = body["lateral"] * unit
    up = body["up"] / np.linalg.norm(body["up"])
    width = unit * rng.uniform(0.85, 1.15)

    def fill(colour: np.ndarray, shade: float) -> tuple[int, ...]:
        return tuple(int(c) for c in np.clip(colour * shade, 0, 255))

    def capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float, colour: tuple, part: str) -> None:
        d = b - a
        n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6)
        edge = tuple(int(c * 0.6) for c in colour)  # a darker rim separates same-coloured overlapping parts
        for dr, value, grow in ((draw, edge, 1.5), (draw, colour, 0.0), (ldraw, _PID[part], 0.0)):
            ga, gb = ra + grow, rb + grow
            quad = [tuple(a + n * ga), tuple(b + n * gb), tuple(b - n * gb), tuple(a - n * ga)]
            dr.polygon(quad, fill=value)
            dr.ellipse([a[0] - ga, a[1] - ga, a[0] + ga, a[1] + ga], fill=value)
            dr.ellipse([b[0] - gb, b[1] - gb, b[0] + gb, b[1] + gb], fill=value)

    def arm(side: str, shade: float) -> None:
        sh, el, wr = (j[8], j[7], j[6]) if side == "r" else (j[9], j[10], j[11])
        capsule(sh, el, 0.11 * width, 0.08 * width, fill(col["uarm"], shade), f"{side}_uarm")
        capsule(el, wr, 0.08 * width, 0.055 * width, fill(col["larm"], shade), f"{side}_larm")
        hand = wr + (wr - el) / max(np.linalg.norm(wr - el), 1e-6) * 0.05 * width
        capsule(wr, hand, 0.06 * width, 0.06 * width, fill(col["skin"], shade), f"{side}_larm")

    def leg(side: str, shade: float) -> None:
        hip, kn, an = (j[2], j[1], j[0]) if side == "r" else (j[3], j[4], j[5])
        capsule(hip, kn, 0.16 * width, 0.1 * width, fill(col["pants"], shade), f"{side}_thigh")
        capsule(kn, an, 0.1 * width, 0.065 * width, fill(col["shin"], shade), f"{side}_shin")
        sign = body["right_sign"] if side == "r" else -body["right_sign"]
        toe = an + (an - kn) / max(np.linalg.norm(an - kn), 1e-6) * 0.05 * width + sign * lat * 0.07
        capsule(an, toe, 0.06 * width, 0.05 * width, fill(col["shoe"], shade), f"{side}_shin")

    far = "l" if body["near"] == "r" else "r"
    arm(far, far_shade)
    leg(far, far_shade)
    leg(body["near"], 1.0)
    # torso: shirt from shoulders to waist, pants band over the hips
    sgn = {"r": body["right_sign"], "l": -body["right_sign"]}
    waist = (j[2] + j[3]) / 2 + up * 0.25 * unit
    shoulder_lift = up * 0.05 * unit
    torso_poly = [j[8] + sgn["r"] * lat * 0.06 + shoulder_lift, j[9] + sgn["l"] * lat * 0.06 + shoulder_lift,
                  waist + sgn["l"] * lat * 0.25, waist + sgn["r"] * lat * 0.25]  # fmt: skip
    hips_poly = [waist + sgn["r"] * lat * 0.25, waist + sgn["l"] * lat * 0.25, j[3] + sgn["l"] * lat * 0.14
                 - up * 0.1 * unit, j[2] + sgn["r"] * lat * 0.14 - up * 0.1 * unit]  # fmt: skip
    for poly, colour in ((torso_poly, col["shirt"]), (hips_poly, col["pants"])):
        pts = [tuple(p) for p in poly]
        draw.polygon(pts, fill=fill(colour, 1.0))
        ldraw.polygon(pts, fill=_PID["torso"])
    # neck and head: an ellipse; front-facing shows a face (eyes shifted by the turn), back-facing hair only
    capsule(j[12], j[12] + up * 0.12 * unit, 0.06 * width, 0.06 * width, fill(col["skin"], 1.0), "head")
    centre = j[12] + up * 0.3 * unit
    side_axis = np.array([-up[1], up[0]])
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)[:, None]
    head = [tuple(p) for p in centre + up * 0.22 * unit * np.sin(t) + side_axis * 0.16 * width * np.cos(t)]
    draw.polygon(head, fill=fill(col["hair"], 1.0))
    ldraw.polygon(head, fill=_PID["head"])
    if body["front"]:
        shift = body["turn"] * 0.05 * unit * np.sign(np.dot(side_axis, body["lateral"]))
        face_c = centre - up * 0.04 * unit + side_axis * shift
        face = face_c + up * 0.17 * unit * np.sin(t) + side_axis * 0.13 * width * np.cos(t)
        draw.polygon([tuple(p) for p in face], fill=fill(col["skin"], 1.0))
        for e in (-1, 1):
            eye = face_c + up * 0.04 * unit + side_axis * e * 0.05 * width
            r = 0.02 * unit
            draw.ellipse([eye[0] - r, eye[1] - r, eye[0] + r, eye[1] + r], fill=(30, 20, 20))
    arm(body["near"], 1.0)


def _background(rng: np.random.Generator, width: int, height: int, sparse: bool = False) -> Image.Image:
    """Smooth colour noise, an optional ground plane and random clutter shapes (some skin-coloured limbs;
    `sparse`: at most three shapes and no limbs)."""
    w1, h1 = width // SUPERSAMPLE, height // SUPERSAMPLE  # texture at output resolution, then upsampled
    cells = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
    base = Image.fromarray(cells.astype(np.uint8)).resize((w1, h1), Image.BICUBIC)
    tint = rng.uniform(0, 100, 3).astype(np.float32)
    arr = np.asarray(base, dtype=np.float32) * rng.uniform(0.4, 1.0) + tint
    if sparse:  # a calm scene: the colour blobs at a third of their contrast around their mean
        arr = arr.mean(axis=(0, 1)) + (arr - arr.mean(axis=(0, 1))) / 3
    if rng.random() < 0.6:
        horizon = int(h1 * rng.uniform(0.45, 0.85))
        arr[horizon:] = arr[horizon:] * 0.3 + rng.uniform(30, 180, 3).astype(np.float32) * 0.7
    grain = rng.standard_normal((h1 // 2 + 1, w1 // 2 + 1, 1), dtype=np.float32) * rng.uniform(2, 12)
    arr += grain.repeat(2, 0).repeat(2, 1)[:h1, :w1]
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    size = min(width, height)
    for _ in range(int(rng.integers(0, 4) if sparse else rng.integers(4, 22))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.03, 0.35, 2) * size
        kind = rng.integers(4 if sparse else 5)
        if kind == 0:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        elif kind == 2:
            draw.line([x, y, x + rng.normal(0, size / 3), y + rng.normal(0, size / 3)], fill=colour,
                      width=int(rng.integers(1, 8)))  # fmt: skip
        elif kind == 3:
            pts = np.array([x, y]) + rng.normal(0, w, (int(rng.integers(3, 7)), 2))
            draw.polygon([tuple(p) for p in pts], fill=colour)
        else:  # a distractor limb: skin-coloured tapered stroke
            skin = tuple(int(c) for c in SKIN_TONES[rng.integers(len(SKIN_TONES))])
            end = np.array([x, y]) + rng.normal(0, size / 6, 2)
            draw.line([x, y, *end], fill=skin, width=int(size * rng.uniform(0.02, 0.05)))
    return img
