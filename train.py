"""Train a task: `python train.py task=<name> [key=value ...]`, a task of conf/task/<name>.yaml."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionlab import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimised metric for sweepers."""
    from visionlab.runner import train  # torch and Lightning only once the config is composed

    return cli.run_entry(train, cfg)


if __name__ == "__main__":
    cli.main(main)
