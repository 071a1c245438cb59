"""Pose figures: skeletons over the images, the refiner's crops and the PDJ curve of each stage."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules.lsp_format import JOINT_NAMES
from tasks.metrics.pose import LIMBS
from tasks.pose.geometry import Crops, normalize_to_box
from visionlab.figures import plt

#: how many crops the refiner figure shows
NUM_CROPS = 6
GT_COLOR, PRED_COLOR, BEFORE_COLOR = "lime", "red", "yellow"
STAGE_COLORS = ("tab:orange", "tab:blue", "tab:red", "tab:purple", "tab:brown")


def crop_panels(
    crops: Crops,
    disp: Tensor,
    before: Tensor,
    truth: Tensor,
    visible: Tensor,
    data_info: dict[str, Any],
    image_size: int,
) -> dict:
    """uint8 crops with the before (crop centre), after and true positions in crop pixels."""
    order = [j for j in range(len(JOINT_NAMES)) if bool(visible[j])][:NUM_CROPS] or list(range(NUM_CROPS))
    mean = torch.as_tensor(data_info.get("mean", [0.0, 0.0, 0.0]), device=disp.device).view(1, 3, 1, 1)
    std = torch.as_tensor(data_info.get("std", [1.0, 1.0, 1.0]), device=disp.device).view(1, 3, 1, 1)
    images = ((crops.images[order].float() * std + mean) * 255).clamp(0, 255).byte()
    s = image_size

    def to_crop(points: Tensor) -> np.ndarray:
        norm = normalize_to_box(points, crops.box_center[order], crops.box_size[order])
        return ((norm + 0.5) * s).cpu().numpy()

    return {
        "images": images.permute(0, 2, 3, 1).cpu().numpy(),
        "joints": order,
        "before": to_crop(before[order]),
        "after": ((disp[order] + 0.5) * s).cpu().numpy(),
        "truth": to_crop(truth[order]),
    }


def _draw_skeleton(ax: Any, joints: np.ndarray, visible: np.ndarray | None, color: str, style: str) -> None:
    for limb in LIMBS:
        ends = (list(limb.a), list(limb.b))
        if visible is not None and not all(visible[e].all() for e in ends):
            continue
        a, b = (joints[e].mean(axis=0) for e in ends)
        ax.plot([a[0], b[0]], [a[1], b[1]], style, color=color, lw=1.6)
    shown = joints if visible is None else joints[visible]
    ax.scatter(shown[:, 0], shown[:, 1], s=6, color=color, zorder=3)


def skeleton_figure(samples: dict[str, Any], stage_index: int, label: str) -> Any:
    """Images with the ground truth (green, visible limbs only) and the predicted skeleton (red, dashed)."""
    images = samples["images"]
    n = len(images)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    preds = samples["preds"][stage_index]
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i])
        _draw_skeleton(ax, samples["joints"][i], samples["visible"][i], GT_COLOR, "-")
        _draw_skeleton(ax, preds[i], None, PRED_COLOR, "--")
        ax.set_xlim(0, images[i].shape[1])
        ax.set_ylim(images[i].shape[0], 0)
    fig.suptitle(f"ground truth (green) vs {label} prediction (red, dashed)", fontsize=9)
    fig.tight_layout()
    return fig


def crop_figure(crops: dict[str, Any]) -> Any:
    """Refiner crops: stage s-1 estimate (yellow x, the crop centre), refined (red o), truth (green +);
    a point outside the crop is drawn on its border as a triangle."""
    n = len(crops["images"])
    fig, axes = plt.subplots(1, n, figsize=(2.0 * n, 2.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        size = crops["images"][i].shape[0]
        ax.imshow(crops["images"][i], extent=(0, size, size, 0))
        for key, marker, color in (
            ("before", "x", BEFORE_COLOR),
            ("after", "o", PRED_COLOR),
            ("truth", "+", GT_COLOR),
        ):
            point = np.asarray(crops[key][i], dtype=float)
            clipped = np.clip(point, 1, size - 1)
            outside = not np.allclose(point, clipped)
            ax.scatter(*clipped, marker="^" if outside else marker, s=60, color=color, linewidths=2,
                       facecolors="none" if marker == "o" and not outside else None)  # fmt: skip
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.set_title(JOINT_NAMES[crops["joints"][i]], fontsize=8)
        ax.axis("off")
    fig.suptitle(
        "before (yellow x) -> after (red o), truth (green +); triangle = outside the crop", fontsize=9
    )
    fig.tight_layout()
    return fig


def pdj_curve_figure(curves: list[tuple[np.ndarray, np.ndarray]], labels: list[str]) -> Any:
    """PDJ (mean over joints) against the fraction of the torso diameter, one line per stage;
    per-joint curves of the last stage in thin grey."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    fractions, per_joint = curves[-1]
    for j in range(per_joint.shape[1]):
        ax.plot(fractions, per_joint[:, j], color="0.8", lw=0.6)
    for (frac, rates), label, color in zip(curves, labels, STAGE_COLORS, strict=False):
        ax.plot(frac, np.nanmean(rates, axis=1), lw=2, label=label, color=color)
    ax.set_xlabel("normalised distance to truth (fraction of torso diameter)")
    ax.set_ylabel("detection rate (PDJ)")
    ax.set_xlim(0, float(fractions[-1]))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("PDJ curve (grey: each joint, last stage)")
    fig.tight_layout()
    return fig
