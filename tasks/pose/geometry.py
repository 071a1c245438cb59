"""Box geometry of DeepPose: the normalisation N(y; b) = (y - b_c) / b_wh and crops for cascade stages.

Pixel coordinates are continuous: pixel (i, j) covers [j, j+1) x [i, i+1), so its centre is
(j + 0.5, i + 0.5). A box b is its centre (N, 2) and size (N, 2) (width, height) in pixels; inside
the box, normalised coordinates lie in [-0.5, 0.5]. Crops from `crop_around` use exactly this
convention, so a point's normalised position in the crop box is its position in the crop image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.ops import roi_align


def _box_like(y: Tensor, value: Tensor) -> Tensor:
    """Broadcast a per-sample (N, 2) or (N,) box quantity against points y of shape (N, ..., 2)."""
    value = value.to(y.dtype)
    if value.dim() == 1:
        value = value[:, None].expand(-1, 2)
    return value.view(value.shape[0], *([1] * (y.dim() - 2)), 2)


def normalize_to_box(y: Tensor, box_center: Tensor, box_size: Tensor) -> Tensor:
    """N(y; b): pixel points (N, ..., 2) -> box frame, [-0.5, 0.5] inside; size (N, 2) or (N,) for squares."""
    return (y - _box_like(y, box_center)) / _box_like(y, box_size)


def denormalize_from_box(y: Tensor, box_center: Tensor, box_size: Tensor) -> Tensor:
    """Inverse of `normalize_to_box`: box-frame points (N, ..., 2) -> pixels."""
    return y * _box_like(y, box_size) + _box_like(y, box_center)


def torso_diameter(joints: Tensor) -> Tensor:
    """Distance left shoulder (9) to right hip (2) of LSP joints (..., 14, 2) -> (...)."""
    return (joints[..., 9, :] - joints[..., 2, :]).norm(dim=-1)


class Crops(NamedTuple):
    """Square crops and the boxes they were cut from (pixel centre (N, 2) and size (N, 2))."""

    images: Tensor
    box_center: Tensor
    box_size: Tensor


def crop_around(
    images: Tensor, centers: Tensor, sides: Tensor, out_size: int, batch_index: Tensor | None = None
) -> Crops:
    """Cut square crops of side `sides` (N,) px centred at `centers` (N, 2) px, resized to out_size.

    Crop k comes from `images[batch_index[k]]` (default: image k), so one image (B, 3, H, W) can give
    many crops (e.g. one per joint) without copies. Bilinear sampling by roi_align with aligned boxes,
    averaging several samples per output pixel when shrinking; outside the image reads as 0.
    """
    n = centers.shape[0]
    if batch_index is None:
        batch_index = torch.arange(images.shape[0], device=images.device)
    if centers.shape != (n, 2) or sides.shape != (n,) or batch_index.shape != (n,):
        raise ValueError(
            f"centers {tuple(centers.shape)}, sides {tuple(sides.shape)} and batch_index "
            f"{tuple(batch_index.shape)} must be (N, 2), (N,) and (N,) for images {tuple(images.shape)}"
        )
    x = images if images.is_floating_point() else images.float()
    centers, sides = centers.to(x), sides.to(x)
    half = sides[:, None] / 2
    rois = torch.cat([batch_index.to(x)[:, None], centers - half, centers + half], dim=1)  # (N, 5)
    crops = roi_align(x, rois, output_size=out_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return Crops(crops, centers, torch.stack([sides, sides], dim=1))
