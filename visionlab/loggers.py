"""Loggers of the framework, and the `logger` group built from the `_target_` of each entry of
`conf/logger/*.yaml` (any allowed Lightning Logger: `logger=csv`, `logger=tensorboard_csv`, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from visionlab.targets import build_entries, check_entries

#: an allowed logger class, for messages
EXAMPLE = "lightning.pytorch.loggers.CSVLogger"


class EpochlessTensorBoardLogger(TensorBoardLogger):
    """TensorBoardLogger that keeps SCALARS to curves: without Lightning's `epoch` scalar (a staircase
    card; the step slider and every curve already show the progress) and without the test phase's
    one-point values (`test/*`, logged once): those are in metrics.json, the summary ones in HPARAMS."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        curves = {k: v for k, v in metrics.items() if k != "epoch" and not k.startswith("test/")}
        if curves:
            super().log_metrics(curves, step)


def check_loggers(specs: Mapping[str, Any] | None) -> None:
    """Refuse, before any data work, a `logger.<name>` entry whose `_target_` is not an allowed Logger
    class, needs a package that is not installed, or is given a key the class does not take."""
    check_entries("logger", specs, Logger, EXAMPLE)


def build_loggers(specs: Mapping[str, Any] | None) -> list[Logger]:
    """One logger per non-null entry of `logger` (resolved values), built from its `_target_`."""
    return build_entries("logger", specs, Logger, EXAMPLE)
