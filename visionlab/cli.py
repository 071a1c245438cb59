"""Entry-point glue: user mistakes (VisionlabError) become one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from visionlab.errors import VisionlabError

log = logging.getLogger("visionlab")


def run_entry(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call `fn(cfg)`; print a VisionlabError as `error: <message>` and exit 2 instead of a traceback."""
    try:
        return fn(cfg)
    except VisionlabError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
