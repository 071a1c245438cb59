"""Entry-point glue: user mistakes become one line on stderr (exit 2); inside a multirun a failing
job is recorded (error line for the sweep summary) and the other jobs go on."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from visionlab.errors import VisionlabError
from visionlab.sweep import record_failure

log = logging.getLogger("visionlab")


def in_multirun() -> bool:
    """True inside a job of `python train.py -m ...`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call `fn(cfg)`. A VisionlabError prints `error: <message>` and exits 2; in a multirun any
    exception marks the job failed instead of stopping the sweep, and returns the worst possible
    objective (-inf when maximising) so a sweeper such as Optuna records it and goes on."""
    try:
        return fn(cfg)
    except Exception as err:
        if in_multirun():
            log.exception("job failed: %s", err)
            record_failure(Path(HydraConfig.get().runtime.output_dir), err)
            maximise = str(cfg.get("monitor", {}).get("mode", "max")) == "max"
            return float("-inf") if maximise else float("inf")
        if isinstance(err, VisionlabError):
            log.error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
