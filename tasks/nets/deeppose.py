"""DeepPose regressor (Toshev & Szegedy 2014): an AlexNet-like network mapping an image to joint coordinates.

Layout of the paper: C(96, 11, s4) - [LRN] - P - C(256, 5) - [LRN] - P - C(384, 3) - C(384, 3) -
C(256, 3) - P - F(4096) - F(4096) - linear to 2 x num_joints. Local response normalisation is
optional (`lrn=False` by default: it costs GPU time and later AlexNet variants dropped it without loss).
`width` scales every layer's channels and the FC size (1.0 = the paper; smaller = quick CPU runs).
`batch_norm` adds BatchNorm after every convolution (off in the paper; on, a from-scratch network
converges several times faster, which is what a short CPU budget needs).

The same class serves every cascade stage. Stage 1 regresses all joints in the full-image box.
A stage s > 1 refiner is one network shared by all joints (the paper: one network per stage): it
sees a crop around joint i's previous estimate and, of its num_joints output pairs, only pair i is
used (`select_joints`), as the displacement of joint i in the crop's normalised frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DeepPoseNet(nn.Module):
    """Image (N, 3, H, W) -> joints (N, num_joints, 2) in the box-normalised frame ([-0.5, 0.5] inside)."""

    def __init__(
        self,
        num_joints: int = 14,
        dropout: float = 0.6,
        input_size: int = 220,
        lrn: bool = False,
        width: float = 1.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.num_joints = num_joints
        self.input_size = input_size
        if width <= 0:
            raise ValueError(f"width={width} must be positive (1.0 = the paper's AlexNet widths)")
        c1, c2, c3, c4, c5, fc = (max(8, round(c * width)) for c in (96, 256, 384, 384, 256, 4096))

        def norm() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0) if lrn else nn.Identity()

        def conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(
                    c_in, c_out, kernel, stride=stride, padding=2 if kernel > 3 else 1, bias=not batch_norm
                )
            ]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            return [*layers, nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, c1, 11, stride=4),
            norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c1, c2, 5),
            norm(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *conv(c2, c3, 3),
            *conv(c3, c4, 3),
            *conv(c4, c5, 3),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        with torch.no_grad():  # the feature grid at `input_size` (5x5 at 220); other sizes are pooled to it
            grid = self.features(torch.zeros(1, 3, input_size, input_size)).shape[-2:]
        self.pool = nn.AdaptiveAvgPool2d(tuple(grid))
        self.regressor = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c5 * grid[0] * grid[1], fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(fc, 2 * num_joints),
        )
        # Start at the box centre with small outputs, so the first L2 steps are well scaled.
        nn.init.normal_(self.regressor[-1].weight, std=1e-3)
        nn.init.zeros_(self.regressor[-1].bias)

    def forward(self, images: Tensor) -> Tensor:
        """Regress normalised (x, y) for every joint."""
        out = self.regressor(self.pool(self.features(images)))
        return out.view(-1, self.num_joints, 2)


def select_joints(outputs: Tensor, joint_index: Tensor) -> Tensor:
    """Pick each row's own joint from a refiner's outputs: (N, K, 2) and (N,) indices -> (N, 2)."""
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), joint_index]
