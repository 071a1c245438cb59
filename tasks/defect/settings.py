"""The defect task's settings: `model.*` for the autoencoder and `metrics.*` for the evaluation, as
typed settings (`visionlab.schema`) checked before any data work."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from tasks.metrics.anomaly import IMAGE_SCORES
from visionlab.errors import ConfigError
from visionlab.schema import ModelSettings, Settings

#: `model.arch` of the defect task's network
ARCH = "autoencoder"
#: model config keys passed to ConvAutoencoder (the rest: `loss`, `arch`)
NET_KEYS = (
    "in_channels",
    "input_size",
    "channels",
    "bottleneck",
    "activation",
    "batch_norm",
    "out_activation",
    "extra_layers",
    "dropout",
)


class DefectModel(ModelSettings):
    """`model.*` of defect: the convolutional autoencoder (`tasks.nets.autoencoder`) and its loss."""

    archs: ClassVar[tuple[str, ...]] = (ARCH,)
    task_label: ClassVar[str] = "defect"
    in_channels: PositiveInt = Field(3, description="a positive integer")
    input_size: PositiveInt = Field(128, description="a positive integer (pixels, = data.image_size)")
    channels: list[PositiveInt] = Field(
        [32, 64, 128, 256], description="a non-empty list of positive integers"
    )
    bottleneck: PositiveInt = Field(100, description="a positive integer")
    activation: str = Field("leaky_relu", description="an activation name")
    batch_norm: bool = Field(False, description="true or false")
    out_activation: str = Field("sigmoid", description="an output activation name")
    #: extra end layers; null = derived from input_size (0 at 128, 1 at 256, 2 at 512)
    extra_layers: NonNegativeInt | None = Field(None, description="a non-negative integer or null")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="in [0, 1)")
    loss: Literal["mse", "ssim"] = Field("mse", description="one of ['mse', 'ssim']")

    def net_kwargs(self) -> dict[str, Any]:
        """The ConvAutoencoder arguments."""
        return {key: getattr(self, key) for key in NET_KEYS}


def check_model(model: dict[str, Any], image_size: int | None) -> DefectModel:
    """`model.*` parsed, and checked against `data.image_size` (the same input size)."""
    settings = DefectModel.parse(model, "model=autoencoder")
    if image_size not in (None, settings.input_size):
        raise ConfigError(
            f"model.input_size={settings.input_size} but data.image_size={image_size}; they must match "
            "(conf/task/defect.yaml sets data.image_size: ${model.input_size})"
        )
    return settings


class DefectMetrics(Settings):
    """`metrics.*` of defect (conf/task/defect.yaml): the anomaly scoring and what is reported."""

    group: ClassVar[str] = "metrics"
    owner: ClassVar[str] = "defect's metrics"
    #: reference pixel thresholds reported besides the fitted one
    thresholds: list[float] = Field(
        [0.1, 0.15, 0.2, 0.3], min_length=1, description="a non-empty list of numbers in [0, 1]"
    )
    image_score: Literal[IMAGE_SCORES] = Field("max", description=f"one of {list(IMAGE_SCORES)}")  # type: ignore[valid-type]
    smooth_sigma: float = Field(4.0, ge=0.0, le=50.0, description="a number in [0, 50]")
    #: none | zscore: standardise the map per pixel by the good training images' error mean / std
    #: (fitted during each training epoch) before the image score; pixel metrics stay on |x - x_hat|
    normalize: Literal["none", "zscore"] = Field("none", description="one of ['none', 'zscore']")
    fpr_limit: float = Field(0.3, ge=1e-9, le=1.0, description="a number in [1e-09, 1]")
    num_bins: int = Field(1000, ge=2, description="an integer >= 2")
    image_bins: int = Field(10000, ge=2, description="an integer >= 2")
    fallback_quantile: float = Field(0.995, ge=1e-9, le=1 - 1e-9, description="a number in (0, 1)")
    examples: NonNegativeInt = Field(4, description="an integer >= 0")

    @field_validator("thresholds")
    @classmethod
    def _in_unit_interval(cls, thresholds: list[float]) -> list[float]:
        if not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(
                f"metrics.thresholds={thresholds!r} must be a non-empty list of numbers in [0, 1]"
            )
        return thresholds


#: the metric settings' defaults, as the plain dict the evaluation classes take
DEFAULT_SETTINGS: dict[str, Any] = DefectMetrics().model_dump()


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`metrics.*` parsed with their defaults, as a plain dict; a bad key or value is a ConfigError naming it."""
    return DefectMetrics.parse(settings).model_dump()
