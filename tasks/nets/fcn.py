"""FCN for semantic segmentation: a torchvision ResNet encoder and a transposed-convolution decoder.

The encoder keeps torchvision's module names (conv1, bn1, layer1..layer4; no avgpool/fc), so an
ImageNet ResNet state dict loads into `model.encoder` with its `fc.*` keys skipped
(`tasks.nets.weights.load_state_dict_file(model.encoder, path, skip_prefixes=("fc.",))`).
The network itself never downloads weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from visionlab.errors import ConfigError

#: `model.arch` of the segment task's network
ARCH = "fcn"
#: `model.backbone`: the torchvision ResNets the encoder can be, and the one used when none is named
BACKBONES = ("resnet18", "resnet34", "resnet50")
DEFAULT_BACKBONE = "resnet18"
#: the decoder widths of the full FCN (five x2 blocks back to full resolution)
DEFAULT_DECODER = (256, 128, 64, 32, 16)
STRIDE = 32  # the full encoder's output stride (4 stages): inputs are padded to a multiple of it


def encoder_stride(stages: int) -> int:
    """Output stride of a ResNet cut after `stages` stages (1..4): 4, 8, 16 or 32."""
    return 2 ** (stages + 1)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet up to layer`stages` (4: layer4, stride 32; 3: layer3, stride 16; 2: layer2,
    stride 8; 1: layer1, stride 4), without pooling and classifier. The stages not kept are not built,
    so a truncated encoder loads a full ResNet state dict with the dropped layers' keys skipped
    (`dropped_prefixes`)."""

    def __init__(self, name: str, stages: int = 4) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ConfigError(f"model.backbone={name!r}: expected one of {list(BACKBONES)}")
        if isinstance(stages, bool) or stages not in (1, 2, 3, 4):
            raise ConfigError(f"model.encoder_stages={stages!r}: expected 1, 2, 3 or 4 ResNet stages")
        net = getattr(models, name)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.stages = stages
        for k in range(1, stages + 1):
            setattr(self, f"layer{k}", getattr(net, f"layer{k}"))
        self.stride = encoder_stride(stages)
        #: state-dict prefixes of a full torchvision ResNet that this encoder does not have
        self.dropped_prefixes: tuple[str, ...] = tuple(f"layer{k}." for k in range(stages + 1, 5))
        #: channels of `features()`' maps, at strides 2, 4, ..., self.stride
        self.feature_channels: tuple[int, ...] = (
            net.conv1.out_channels,
            *(_block_channels(getattr(net, f"layer{k}")[-1]) for k in range(1, stages + 1)),
        )
        self.out_channels: int = self.feature_channels[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps at strides 2 (the stem, before max pooling), 4 (layer1), ..., `self.stride`."""
        x = self.relu(self.bn1(self.conv1(x)))
        maps = [x]
        x = self.maxpool(x)
        for k in range(1, self.stages + 1):
            x = getattr(self, f"layer{k}")(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]


def _block_channels(block: nn.Module) -> int:
    """Output channels of a torchvision BasicBlock (conv2) or Bottleneck (conv3)."""
    return block.conv3.out_channels if hasattr(block, "conv3") else block.conv2.out_channels


def check_skips(skips: object, decoder_blocks: int, encoder_stages: int) -> None:
    """`model.skips` must be an integer from 0 to the decoder blocks that land on a finer encoder map
    (one per stage: layer(k-1), ..., the stem)."""
    most = min(decoder_blocks, encoder_stages)
    if isinstance(skips, bool) or not isinstance(skips, int) or not 0 <= skips <= most:
        raise ConfigError(
            f"model.skips={skips!r}: expected an integer from 0 to {most} (one per decoder block "
            f"that lands on an encoder stride)"
        )


def bilinear_kernel(size: int = 4) -> torch.Tensor:
    """The (size, size) kernel with which a stride size/2 transposed convolution upsamples bilinearly."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    return ramp[:, None] * ramp[None, :]


def init_bilinear_(conv: nn.ConvTranspose2d) -> None:
    """Initialise `conv` to upsample bilinearly, mapping channels as evenly as the shapes allow.

    in == out: each channel upsamples itself. in > out: output channel o upsamples the mean of the
    input channels i with i * out // in == o. in < out: output channel o copies input o * in // out.
    """
    c_in, c_out, k, _ = conv.weight.shape
    kernel = bilinear_kernel(k)
    weight = torch.zeros_like(conv.weight)
    if c_in >= c_out:
        groups = torch.arange(c_in) * c_out // c_in
        counts = torch.bincount(groups, minlength=c_out).float()
        weight[torch.arange(c_in), groups] = kernel / counts[groups, None, None]
    else:
        weight[torch.arange(c_out) * c_in // c_out, torch.arange(c_out)] = kernel
    with torch.no_grad():
        conv.weight.copy_(weight)


def _up_block(c_in: int, c_out: int, batch_norm: bool = True) -> nn.Sequential:
    """ConvT k4 s2 p1 (no bias) + BN + ReLU; without BN the convolution gets a bias instead."""
    conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=not batch_norm)
    init_bilinear_(conv)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    norm = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
    return nn.Sequential(conv, norm, nn.ReLU(inplace=True))


class FCN(nn.Module):
    """ResNet encoder -> `len(decoder_channels)` x2 upsampling blocks (ConvT k4 s2 p1 + BN + ReLU)
    -> optional Dropout2d -> 1x1 classifier conv. Returns logits (N, num_classes, H, W).
    `batch_norm=False` drops the decoder's BatchNorm (the convolutions then carry a bias).

    `encoder_stages` keeps the first 1-4 ResNet stages (output stride 4, 8, 16, 32); the decoder may
    have at most log2(stride) blocks. With log2(stride) blocks (5 for the full encoder) it returns to
    full resolution; with fewer, the logits are upsampled bilinearly the rest of the way. Inputs whose
    H or W is not a multiple of the stride are zero-padded (bottom/right) and the output is cropped
    back, so any input size works.
    """

    def __init__(
        self,
        num_classes: int = 9,
        encoder: str = DEFAULT_BACKBONE,
        decoder_channels: Sequence[int] = DEFAULT_DECODER,
        dropout: float = 0.0,
        batch_norm: bool = True,
        encoder_stages: int = 4,
        skips: int = 0,
    ) -> None:
        super().__init__()
        self.encoder_backbone_name = encoder
        self.encoder = ResNetEncoder(encoder, encoder_stages)
        self.stride = self.encoder.stride
        max_blocks = self.stride.bit_length() - 1
        if not 1 <= len(decoder_channels) <= max_blocks:
            raise ConfigError(
                f"model.decoder_channels={list(decoder_channels)}: expected 1 to {max_blocks} widths "
                f"(one x2 block per halving of the encoder's output stride {self.stride})"
            )
        widths = [self.encoder.out_channels, *decoder_channels]
        self.decoder = nn.Sequential(*(_up_block(a, b, batch_norm) for a, b in pairwise(widths)))
        # encoder maps finer than the output, finest last: stride/2, stride/4, ..., 2
        check_skips(skips, len(decoder_channels), encoder_stages)
        finer = self.encoder.feature_channels[-2::-1]
        self.skips = nn.ModuleList(
            nn.Conv2d(c_enc, c_dec, kernel_size=1, bias=False)
            for c_enc, c_dec in zip(finer[:skips], decoder_channels[:skips], strict=True)
        )
        for projection in self.skips:
            nn.init.zeros_(projection.weight)
        self.head = nn.Sequential(
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(widths[-1], num_classes, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.stride, -width % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        maps = self.encoder.features(x)
        y = maps[-1]
        finer = maps[-2::-1]
        for k, block in enumerate(self.decoder):
            y = block(y)
            if k < len(self.skips):
                y = y + self.skips[k](finer[k])
        logits = self.head(y)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]
