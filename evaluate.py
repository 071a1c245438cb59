"""Evaluate a checkpoint: `python evaluate.py task=<name> ckpt_path=<file.ckpt> [split=test|val]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionlab.cli import run_entry
from visionlab.runner import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point; prints the task's report and writes metrics.json."""
    return run_entry(evaluate, cfg)


if __name__ == "__main__":
    main()
