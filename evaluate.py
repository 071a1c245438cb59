"""Evaluate a checkpoint: `python evaluate.py task=<name> ckpt_path=<file.ckpt> [split=test|val]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionlab import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    """Hydra entry point; prints the task's report and writes metrics.json."""
    from visionlab.runner import evaluate  # torch and Lightning only once the config is composed

    return cli.run_entry(evaluate, cfg)


if __name__ == "__main__":
    cli.main(main)
