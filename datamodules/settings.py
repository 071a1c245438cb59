"""The `data.*` settings every DataModule shares, as typed pydantic models (`visionlab.schema`).

Each DataModule declares its own `Settings` by combining these: `DataSettings` (root, batch size,
loading, augmentation, the embedded set), `ImageSettings` (input size and the decoded-image cache)
and `NormalisedSettings` (mean/std applied on the device). A class redeclares a field to give it
another default (`image_size: PositiveInt = 220`); its defaults are the ones used when the DataModule
is built in Python, the task's YAML sets the values of a run.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from visionlab.schema import Settings

#: an Albumentations (`augment`) or kornia (`gpu_augment`) pipeline: transforms by class name with their arguments
Pipeline = list[dict[str, Any]] | None


class DataSettings(Settings):
    """Where the data is, how batches are loaded, how training samples are augmented."""

    root: str | None = Field(None, description="a folder path, or null for the embedded set")
    batch_size: PositiveInt = Field(32, description="a positive integer")
    num_workers: NonNegativeInt | Literal["auto"] = Field(0, description="a non-negative integer or 'auto'")
    pin_memory: bool | Literal["auto"] = Field("auto", description="true, false or auto")
    on_bad_file: Literal["raise", "skip"] = Field("raise", description="'raise' or 'skip'")
    split_seed: int = Field(0, description="an integer seed")
    augment: Pipeline = Field(None, description="a list of {name: <transform>, ...} or null")
    gpu_augment: Pipeline = Field(None, description="a list of {name: <kornia transform>, ...} or null")
    synthetic: dict[str, Any] | None = Field(None, description="the embedded set's settings, a mapping")

    @property
    def skip_bad_files(self) -> bool:
        """`on_bad_file=skip`: leave unreadable files out (one warning counts them) instead of stopping."""
        return self.on_bad_file == "skip"


class ImageSettings(DataSettings):
    """Images resized to a square network input and, by default, decoded into memory once."""

    image_size: PositiveInt = Field(128, description="a positive integer (pixels)")
    cache_images: bool | Literal["auto"] = Field("auto", description="true, false or auto")


class NormalisedSettings(DataSettings):
    """`mean` / `std` per channel, applied on the device after the batch transfer."""

    #: how many values mean and std hold (3 for RGB, 1 for grayscale)
    channels: ClassVar[int] = 3
    mean: list[float] = Field([0.485, 0.456, 0.406], description="a list of numbers, one per channel")
    std: list[float] = Field([0.229, 0.224, 0.225], description="a list of positive numbers, one per channel")

    @model_validator(mode="after")
    def _check_statistics(self) -> NormalisedSettings:
        n = self.channels
        if len(self.mean) != n or len(self.std) != n or min(self.std) <= 0:
            per = "one value each (grayscale)" if n == 1 else f"expected {n} values each"
            raise ValueError(f"data.mean={self.mean} / data.std={self.std}: {per}, std > 0")
        return self


def fraction(key: str, value: float, low_open: bool, why: str = "") -> None:
    """ValueError unless `value` is in (0, 1) (`low_open`) or [0, 1); for model validators."""
    ok = 0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"{key}={value!r}: expected a fraction in {interval}{why}")
