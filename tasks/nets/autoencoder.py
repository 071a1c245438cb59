"""Convolutional autoencoder for anomaly detection by reconstruction error, plus its map and losses.

Encoder: stride-2 4x4 convolutions, flatten, a linear bottleneck. Decoder: the mirror image with
transposed convolutions and a sigmoid output, so reconstructions live in [0, 1] like the inputs.
Depth follows the input size: the 128-pixel reference uses `channels` (four convolutions down to
8x8); each doubling of `input_size` adds one extra stride-2 convolution at both ends
(`extra_layers`), as the reference's 256-pixel variant did (there with `bottleneck=500`), so the
flattened code stays the same size. `dropout` (default 0) acts on the flattened encoder features just
before the bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure

from visionlab.errors import ConfigError

ACTIVATIONS = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}
OUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "none": nn.Identity}
BASE_INPUT_SIZE = 128


class ConvAutoencoder(nn.Module):
    """Strided-conv encoder -> linear bottleneck -> linear -> transposed-conv decoder -> output activation.

    `extra_layers=None` derives the extra end layers from `input_size` (0 at 128, 1 at 256, 2 at 512);
    an integer overrides it. Every argument is checked, and a bad one raises `ConfigError` naming it.
    """

    def __init__(
        self,
        in_channels: int = 3,
        input_size: int = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        bottleneck: int = 100,
        activation: str = "leaky_relu",
        batch_norm: bool = False,
        out_activation: str = "sigmoid",
        extra_layers: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("input_size", input_size)
        _check_positive_int("bottleneck", bottleneck)
        if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ConfigError(f"channels={channels}: expected a non-empty list of positive integers")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation={activation!r}: expected one of {sorted(ACTIVATIONS)}")
        if out_activation not in OUT_ACTIVATIONS:
            raise ConfigError(f"out_activation={out_activation!r}: expected one of {sorted(OUT_ACTIVATIONS)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r}: expected a probability in [0, 1)")
        if extra_layers is None:
            extra_layers = max(0, round(math.log2(input_size / BASE_INPUT_SIZE)))
        if not isinstance(extra_layers, int) or extra_layers < 0:
            raise ConfigError(f"extra_layers={extra_layers}: expected a non-negative integer or null")
        widths = [channels[0]] * extra_layers + channels
        depth = len(widths)
        if input_size % 2**depth:
            raise ConfigError(
                f"input_size={input_size}: must be divisible by 2**depth = {2**depth} (depth = "
                f"{len(channels)} channels + {extra_layers} extra layers); use e.g. 128 or 256, or change "
                "channels"
            )
        self.code_shape = (widths[-1], input_size // 2**depth, input_size // 2**depth)
        flat = math.prod(self.code_shape)

        def block(conv: nn.Module, width: int) -> list[nn.Module]:
            return [conv, *([nn.BatchNorm2d(width)] if batch_norm else []), ACTIVATIONS[activation]()]

        enc: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True):
            enc += block(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not batch_norm), c_out)
        # Dropout (p = 0: none) on the flattened features, just before the bottleneck projection.
        drop = [nn.Dropout(float(dropout))] if dropout > 0 else []
        self.encoder = nn.Sequential(*enc, nn.Flatten(), *drop, nn.Linear(flat, bottleneck))
        dec: list[nn.Module] = []
        for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            dec += block(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=not batch_norm), c_out)
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck, flat),
            ACTIVATIONS[activation](),
            nn.Unflatten(1, self.code_shape),
            *dec,
            nn.ConvTranspose2d(widths[0], in_channels, 4, 2, 1),
            OUT_ACTIVATIONS[out_activation](),
        )
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct `x` (N, C, input_size, input_size)."""
        return self.decoder(self.encoder(x))


def anomaly_map(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per-pixel anomaly score (N, H, W): mean over channels of |x - x_hat|."""
    return (x - x_hat).abs().mean(dim=1)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Training loss: "mse" (mean squared error) or "ssim" (1 - SSIM with data range 1, 11x11 Gaussian)."""
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "ssim":
        ssim = structural_similarity_index_measure(x_hat.float(), x.float(), data_range=1.0)
        return 1.0 - ssim
    raise ConfigError(f"loss={kind!r}: expected 'mse' or 'ssim'")


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}={value!r}: expected a positive integer")
