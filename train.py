"""Train a task: `python train.py task=<pose|defect|segment|finetune|embed> [key=value ...]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionlab.cli import run_entry
from visionlab.runner import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers."""
    return run_entry(train, cfg)


if __name__ == "__main__":
    main()
