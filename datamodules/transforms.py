"""Albumentations pipelines built from config lists, and the shared resize used by the load stage."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image

from visionlab.errors import ConfigError


def build_augment(
    specs: Sequence[dict[str, Any]] | None, key: str = "data.augment", **compose_kwargs: Any
) -> SeededAugment | None:
    """A seeded `A.Compose` from `[{name: HorizontalFlip, p: 0.5}, ...]`; None when the list is empty.

    `compose_kwargs` pass keypoint/bbox params; an unknown transform name or a bad argument is a
    ConfigError naming `key[i]`.
    """
    if not specs:
        return None
    transforms = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("name", None)
        cls = getattr(A, str(name), None)
        if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
            raise ConfigError(f"{key}[{i}].name={name!r} is not an Albumentations transform")
        try:
            transforms.append(cls(**spec))
        except Exception as err:  # pydantic ValidationError or TypeError: both mean bad arguments
            first = str(err).strip().splitlines()
            raise ConfigError(
                f"{key}[{i}] ({name}): invalid arguments {spec}: {' '.join(first[:3])}"
            ) from None
    return SeededAugment(A.Compose(transforms, **compose_kwargs))


def resize_short_side_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the short side is `size`, then crop the centre square (keeps the aspect ratio)."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(pil)[top : top + size, left : left + size]


class SeededAugment:
    """An Albumentations pipeline with a reproducible random state.

    Albumentations keeps its own random state, untouched by `seed_everything`. Loaders built by
    `datamodules.common.make_loader` call `reseed` before every sample with a seed derived from
    (global seed, epoch, position), so augmentation is the same with any number of workers and again
    after a resume. Used on its own, it seeds from `torch.initial_seed()` on first use in a process.
    """

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose
        self._seeded_pid: int | None = None

    def reseed(self, seed: int) -> None:
        """Seed the pipeline for the next sample."""
        self.compose.set_random_seed(seed)
        self._seeded_pid = os.getpid()

    def __call__(self, **data: Any) -> dict[str, Any]:
        if self._seeded_pid != os.getpid():
            self.reseed(torch.initial_seed() % 2**32)
        return self.compose(**data)
