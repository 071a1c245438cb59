"""The defect task's settings: `model.*` for the autoencoder and `metrics.*` for the evaluation,
checked before any data work."""

from __future__ import annotations

from typing import Any

from tasks.metrics.anomaly import IMAGE_SCORES
from visionlab.errors import ConfigError

LOSSES = ("mse", "ssim")
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


def check_model(model: dict[str, Any], image_size: int | None) -> str:
    """Check `model.*` against the autoencoder's settings and `data.image_size`; returns the loss name."""
    if model.get("arch", ARCH) != ARCH:
        raise ConfigError(f"model.arch={model.get('arch')!r} is not a defect model; expected {ARCH!r}")
    loss = str(model.get("loss", "mse"))
    if loss not in LOSSES:
        raise ConfigError(f"model.loss={loss!r}: expected one of {list(LOSSES)}")
    unknown = sorted(set(model) - {*NET_KEYS, "loss", "arch"})
    if unknown:
        raise ConfigError(f"model.{unknown[0]} is not an autoencoder setting; expected {sorted(NET_KEYS)}")
    size = model.get("input_size", 128)
    if image_size not in (None, size):
        raise ConfigError(
            f"model.input_size={size} but data.image_size={image_size}; they must match "
            "(conf/task/defect.yaml sets data.image_size: ${model.input_size})"
        )
    return loss


#: metric settings (`metrics:` in conf/task/defect.yaml) and their defaults
DEFAULT_SETTINGS: dict[str, Any] = {
    "thresholds": [0.1, 0.15, 0.2, 0.3],
    "image_score": "max",
    "smooth_sigma": 4.0,
    # none | zscore: standardise the map per pixel by the good training images' error mean / std
    # (fitted during each training epoch) before the image score; pixel metrics stay on |x - x_hat|.
    "normalize": "none",
    "fpr_limit": 0.3,
    "num_bins": 1000,
    "image_bins": 10000,
    "fallback_quantile": 0.995,
    "examples": 4,
}
NORMALIZE = ("none", "zscore")


def check_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """`DEFAULT_SETTINGS` updated by `settings`; an unknown key or a bad value is a ConfigError naming it."""
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise ConfigError(f"metrics.{key} is not known; expected one of {sorted(DEFAULT_SETTINGS)}")
        merged[key] = value
    thresholds = merged["thresholds"]
    if (
        not isinstance(thresholds, (list, tuple))
        or not thresholds
        or not all(_number(t) and 0 <= t <= 1 for t in thresholds)
    ):
        raise ConfigError(f"metrics.thresholds={thresholds!r} must be a non-empty list of numbers in [0, 1]")
    merged["thresholds"] = [float(t) for t in thresholds]
    if merged["image_score"] not in IMAGE_SCORES:
        raise ConfigError(
            f"metrics.image_score={merged['image_score']!r}: expected one of {list(IMAGE_SCORES)}"
        )
    if merged["normalize"] not in NORMALIZE:
        raise ConfigError(f"metrics.normalize={merged['normalize']!r}: expected one of {list(NORMALIZE)}")
    for key, low, high in (
        ("smooth_sigma", 0, 50),
        ("fpr_limit", 1e-9, 1),
        ("fallback_quantile", 1e-9, 1 - 1e-9),
    ):
        if not _number(merged[key]) or not low <= merged[key] <= high:
            raise ConfigError(f"metrics.{key}={merged[key]!r} must be a number in [{low}, {high}]")
    for key, low in (("num_bins", 2), ("image_bins", 2), ("examples", 0)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"metrics.{key}={value!r} must be an integer >= {low}")
    return merged


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
