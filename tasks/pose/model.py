"""The pose task's `model.*` settings (checked before any data work), its network and the L2 loss over
visible joints."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, NonNegativeInt
from torch import Tensor

from datamodules.lsp_format import JOINT_NAMES
from tasks.nets.deeppose import DeepPoseNet
from visionlab.errors import ConfigError
from visionlab.schema import ModelSettings

NUM_JOINTS = len(JOINT_NAMES)


class PoseModel(ModelSettings):
    """`model.*` of a pose run: the DeepPose network and, for stages > 1, the refiner's crops."""

    archs: ClassVar[tuple[str, ...]] = ("deeppose",)
    task_label: ClassVar[str] = "pose"
    #: dropout of the two fully connected layers (the paper: 0.6)
    dropout: float = Field(0.6, ge=0.0, lt=1.0, description="in [0, 1)")
    #: scales every conv width and the FC size (1.0 = the paper's AlexNet widths)
    width: float = Field(1.0, gt=0.0, description="a positive number (1.0 = the paper's AlexNet widths)")
    lrn: bool = Field(False, description="true or false")
    batch_norm: bool = Field(False, description="true or false")
    #: stages > 1: crop side = sigma x torso diameter of the stage s-1 estimate
    sigma: float = Field(1.0, gt=0.0, description="a number > 0")
    #: stages > 1: smallest crop side, as a fraction of the input size
    min_crop: float = Field(0.1, gt=0.0, le=4.0, description="a number in (0, 4]")
    #: stages > 1: extra training crops per image and joint, displaced by the stage s-1 error distribution
    simulated_per_joint: NonNegativeInt = Field(1, description="an integer >= 0")
    #: stages > 1: start the refiner from the previous stage's weights (same width, lrn, batch_norm)
    init_from_previous: bool = Field(False, description="true or false")


def build_net(model: PoseModel, input_size: int) -> DeepPoseNet:
    """The DeepPose network of `model` for `input_size` inputs."""
    try:
        return DeepPoseNet(NUM_JOINTS, model.dropout, input_size, model.lrn, model.width, model.batch_norm)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def masked_l2(pred: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    """Squared distance per joint, averaged over visible joints (no host sync: masks multiply)."""
    weight = visible.to(torch.float32)
    sq = (pred.float() - target.float()).square().sum(dim=-1)
    return (sq * weight).sum() / weight.sum().clamp_min(1.0)
