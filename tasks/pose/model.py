"""The pose network from `model.*` (checked before any data work) and the L2 loss over visible joints."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from datamodules.lsp_format import JOINT_NAMES
from tasks.nets.deeppose import DeepPoseNet
from visionlab.errors import ConfigError

NUM_JOINTS = len(JOINT_NAMES)


def check_model(model: dict[str, Any]) -> tuple[float, float, int]:
    """Check `model.*` of a pose run; returns the refiners' (sigma, min_crop, simulated_per_joint)."""
    arch = model.get("arch", "deeppose")
    if arch != "deeppose":
        raise ConfigError(f"model.arch={arch!r} is not a pose model; expected 'deeppose'")
    width = model.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ConfigError(
            f"model.width={width!r} must be a positive number (1.0 = the paper's AlexNet widths)"
        )
    sigma, min_crop = float(model.get("sigma", 1.0)), float(model.get("min_crop", 0.1))
    simulated = int(model.get("simulated_per_joint", 1))
    if sigma <= 0 or not 0 < min_crop <= 4 or simulated < 0:
        raise ConfigError(
            f"model.sigma={sigma} must be > 0, model.min_crop={min_crop} in (0, 4], "
            f"model.simulated_per_joint={simulated} >= 0"
        )
    return sigma, min_crop, simulated


def build_net(model: dict[str, Any], input_size: int) -> DeepPoseNet:
    """The DeepPose network of `model` (keys dropout, width, lrn, batch_norm) for `input_size` inputs."""
    check_model(model)
    try:
        return DeepPoseNet(
            NUM_JOINTS,
            float(model.get("dropout", 0.6)),
            input_size,
            bool(model.get("lrn", False)),
            float(model.get("width", 1.0)),
            bool(model.get("batch_norm", False)),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def masked_l2(pred: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    """Squared distance per joint, averaged over visible joints (no host sync: masks multiply)."""
    weight = visible.to(torch.float32)
    sq = (pred.float() - target.float()).square().sum(dim=-1)
    return (sq * weight).sum() / weight.sum().clamp_min(1.0)
