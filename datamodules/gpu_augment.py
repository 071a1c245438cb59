"""Batched augmentation on the training device with kornia (`data.gpu_augment`).

The Albumentations pipeline (`data.augment`) runs per sample in the loader workers on the CPU; it is
the reference and the CPU default. On a GPU it cannot keep up with the networks (see issue 8 in the
README's performance section), so `data.gpu_augment` takes the same kind of list with
`kornia.augmentation` class names, applied to whole uint8 batches right after they reach the device.
kornia samples parameters per image and carries keypoints (pose) and masks (segment) through the same
geometry. Pixel centres sit at integer coordinates in kornia, as in Albumentations.

Batches keep the loader's contract: uint8 (N, H, W, C) images in, uint8 out; keypoints in continuous
pixel coordinates; masks as class indices where pixels moved in from outside the frame get
`mask_fill` (void). Parameters follow from (seed, epoch, batch number in the epoch, DDP rank), not
from the global RNG, so a run resumed at an epoch boundary (as `resume=` does, from `last.ckpt`)
draws the same augmentation as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
from kornia.augmentation import IntensityAugmentationBase2D

from visionlab.errors import ConfigError

#: kornia transforms that mirror the image: an odd number of them swaps the left and right joints
MIRRORING = ("RandomHorizontalFlip", "RandomVerticalFlip")
#: kornia transforms that warp the image but return keypoints unmoved (kornia 0.9): refused for pose
KEYPOINT_BLIND = ("RandomElasticTransform", "RandomFisheye", "RandomThinPlateSpline")


class RandomGaussianNoise(IntensityAugmentationBase2D):
    """Additive Gaussian noise drawn on the device (`torch.randn_like`); same arguments as kornia's
    op, which draws the noise on the host and copies it (about 600 img/s at 220 px on an H100)."""

    def __init__(
        self, mean: float = 0.0, std: float = 1.0, p: float = 0.5, same_on_batch: bool = False
    ) -> None:
        super().__init__(p=p, same_on_batch=same_on_batch)
        self.mean, self.std = float(mean), float(std)

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return input + torch.randn_like(input).mul_(self.std).add_(self.mean)


#: our replacements for kornia ops of the same name
_OWN_OPS: dict[str, type] = {"RandomGaussianNoise": RandomGaussianNoise}


def build_gpu_augment(
    specs: Sequence[dict[str, Any]] | None,
    key: str = "data.gpu_augment",
    mirror_permutation: Sequence[int] | None = None,
    mask_fill: int = 255,
    image_shape: tuple[int, int, int] | None = None,
    keypoints: bool = False,
    masks: bool = False,
) -> GpuAugment | None:
    """A `GpuAugment` from `[{name: RandomHorizontalFlip, p: 0.5}, ...]`; None for an empty list.

    An unknown name or bad arguments is a ConfigError naming `key[i]`. With `image_shape` (H, W, C) of
    the batches the pipeline is run once on blank data carrying `keypoints` / `masks` as training will,
    so a size change or an op kornia cannot apply to them is a ConfigError now, not at the first batch.
    """
    if not specs:
        return None
    ops = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = str(spec.pop("name", None))
        cls = _OWN_OPS.get(name) or getattr(K, name, None)
        if not isinstance(cls, type) or not issubclass(cls, K.base._AugmentationBase):
            raise ConfigError(
                f"{key}[{i}].name={name!r} is not a kornia.augmentation transform "
                "(e.g. RandomHorizontalFlip, RandomAffine, ColorJitter, RandomGaussianBlur, RandomGaussianNoise)"
            )
        if keypoints and name in KEYPOINT_BLIND:
            raise ConfigError(
                f"{key}[{i}].name={name}: kornia warps the image but leaves keypoints where they were, so the "
                "joints would no longer match; use rigid geometry (RandomAffine, RandomPerspective, flips, crops)"
            )
        try:
            ops.append(cls(**spec))
        except Exception as err:  # TypeError / ValueError / AssertionError: all mean bad arguments
            first = " ".join(str(err).strip().splitlines()[:2])
            raise ConfigError(f"{key}[{i}] ({name}): invalid arguments {spec}: {first}") from None
    augment = GpuAugment(ops, mirror_permutation, mask_fill, key)
    if image_shape is not None:
        augment.dry_run(image_shape, keypoints, masks)
    return augment


class GpuAugment:
    """A kornia pipeline over uint8 NHWC batches on their device, with optional keypoints and masks."""

    def __init__(
        self,
        ops: Sequence[torch.nn.Module],
        mirror_permutation: Sequence[int] | None = None,
        mask_fill: int = 255,
        key: str = "data.gpu_augment",
    ) -> None:
        self.ops, self.key, self.mask_fill = list(ops), key, mask_fill
        self.sequence = K.AugmentationSequential(*self.ops)
        self.permutation = torch.as_tensor(mirror_permutation) if mirror_permutation is not None else None
        self.seed = torch.initial_seed()
        self._epoch, self._batch = -1, 0

    def __call__(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor | None = None,
        visible: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Augment one batch: images uint8 (N, H, W, C); keypoints (N, K, 2) continuous px with
        visible (N, K) bool; masks (N, H, W) integer. Returns the same four, transformed together."""
        if epoch != self._epoch:
            self._epoch, self._batch = epoch, 0
        seed = int(np.random.SeedSequence([self.seed, epoch, self._batch, _rank()]).generate_state(1)[0])
        self._batch += 1
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self._apply(images, keypoints, visible, masks)

    def dry_run(
        self, image_shape: tuple[int, int, int], keypoints: bool = False, masks: bool = False
    ) -> None:
        """Run the pipeline once on two blank images of `image_shape` (H, W, C), with keypoints and/or
        masks, on the CPU and outside the random state and batch count of training: any failure (a size
        change, an op that cannot carry masks, arguments kornia rejects only when run) is a ConfigError."""
        height, width = image_shape[:2]
        blank = torch.zeros((2, *image_shape), dtype=torch.uint8)
        count = len(self.permutation) if self.permutation is not None else 1
        points = torch.full((2, count, 2), min(height, width) / 2) if keypoints else None
        labels = torch.zeros((2, height, width), dtype=torch.uint8) if masks else None
        with torch.random.fork_rng(devices=[]):
            try:
                self._apply(blank, points, None, labels)
            except ConfigError:
                raise
            except Exception as err:  # kornia's own errors: NotImplementedError, ValueError, BaseError, ...
                first = " ".join(str(err).strip().splitlines()[:2]) or type(err).__name__
                carried = " with masks" if masks else " with keypoints" if keypoints else ""
                raise ConfigError(
                    f"{self.key}: cannot run on {width}x{height}x{image_shape[2]} batches{carried}: {first}"
                ) from None

    def _apply(
        self,
        images: torch.Tensor,
        keypoints: torch.Tensor | None,
        visible: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        height, width = images.shape[1:3]
        inputs: list[torch.Tensor] = [images.permute(0, 3, 1, 2).float().div_(255.0)]
        data_keys = ["input"]
        if keypoints is not None:
            inputs.append(keypoints.float() - 0.5)  # continuous -> pixel centres at integers
            data_keys.append("keypoints")
        if masks is not None:
            # shift by one so that kornia's zero fill of pixels from outside the frame marks them
            inputs.append((masks.long() + 1).unsqueeze(1).float())
            data_keys.append("mask")
        outputs = self.sequence(*inputs, data_keys=data_keys)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        out_images = outputs.pop(0)
        if tuple(out_images.shape[-2:]) != (height, width):
            raise ConfigError(
                f"{self.key} turns {width}x{height} batches into {out_images.shape[-1]}x{out_images.shape[-2]}; "
                "keep the size (e.g. RandomResizedCrop with size equal to data.image_size)"
            )
        images = out_images.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)
        if keypoints is not None:
            keypoints, visible = self._keypoints(outputs.pop(0) + 0.5, visible, width, height)
        if masks is not None:
            moved = outputs.pop(0).squeeze(1).round().long() - 1
            masks = torch.where(moved < 0, torch.full_like(moved, self.mask_fill), moved).to(masks.dtype)
        return images, keypoints, visible, masks

    def _keypoints(
        self, keypoints: torch.Tensor, visible: torch.Tensor | None, width: int, height: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap left/right rows of mirrored samples; points pushed out of the frame become invisible."""
        if visible is None:
            visible = torch.ones(keypoints.shape[:2], dtype=torch.bool, device=keypoints.device)
        if self.permutation is not None:
            mirrored = self.mirror_count(len(keypoints), keypoints.device) % 2 == 1
            if self.permutation.device != keypoints.device:  # moved once, not per batch
                self.permutation = self.permutation.to(keypoints.device)
            perm = self.permutation
            keypoints = torch.where(mirrored[:, None, None], keypoints[:, perm], keypoints)
            visible = torch.where(mirrored[:, None], visible[:, perm], visible)
        x, y = keypoints[..., 0], keypoints[..., 1]
        inside = (x >= 0) & (y >= 0) & (x < width) & (y < height) & torch.isfinite(keypoints).all(-1)
        return keypoints, visible.bool() & inside

    def mirror_count(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """How many mirroring ops fired per sample of the last call: (batch_size,) int on `device`
        (no host synchronisation)."""
        counts = torch.zeros(batch_size, dtype=torch.long, device=device)
        for item in self.sequence._params:
            if item.name.rsplit("_", 1)[0] in MIRRORING:
                fired = item.data["batch_prob"].to(device, non_blocking=True).round().long()
                counts = counts + fired.reshape(-1).expand(batch_size)
        return counts


def _rank() -> int:
    """This process's rank under DDP (0 otherwise), so ranks draw different augmentations."""
    distributed = torch.distributed
    return distributed.get_rank() if distributed.is_available() and distributed.is_initialized() else 0
