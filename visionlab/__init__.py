"""visionlab: the framework core (runner, callbacks, figures, sweeps) shared by all tasks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def _mkdir(path: str) -> str:
    """`${mkdir:<path>}` in a config: create the folder (e.g. for an SQLite study) and return its path."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


if not OmegaConf.has_resolver("mkdir"):
    OmegaConf.register_new_resolver("mkdir", _mkdir)
