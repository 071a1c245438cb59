"""The run's row in TensorBoard's HPARAMS tab: its flattened config and summary metrics, written as a
session of its own so that every run of every task shows its own columns."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

#: the TensorBoard run (a subfolder of the run's tensorboard/) that holds the run's HPARAMS session
HPARAMS_RUN = "hparams"


def log_final_hparams(
    loggers: list[Logger],
    cfg: DictConfig,
    metrics: dict[str, float],
    headline: tuple[str, ...] = (),
    step: int = 0,
) -> None:
    """The run's row in TensorBoard's HPARAMS tab: its config and summary metrics (see
    `hparams_metrics`), written as a session of its own in `tensorboard/hparams/`."""
    summary = hparams_metrics(cfg, metrics, headline)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams_session(Path(logger.log_dir) / HPARAMS_RUN, flatten_config(cfg), summary, step)


def hparams_metrics(
    cfg: DictConfig, metrics: dict[str, float], headline: tuple[str, ...]
) -> dict[str, float]:
    """The metrics HPARAMS compares runs on: the task's headline test metrics (of the best checkpoint)
    and the monitored metric (its final value, which sweepers optimise, and its test value). Each is a
    scalar TensorBoard also shows in SCALARS, so best/* and per-class values stay in metrics.json."""
    monitor = str(cfg.get("monitor", {}).get("metric", ""))
    keep = (*headline, monitor, monitor.replace("val/", "test/", 1))
    return {k: metrics[k] for k in dict.fromkeys(keep) if k in metrics and math.isfinite(metrics[k])}


def write_hparams_session(folder: Path, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
    """One HPARAMS session in `folder`: the hparams, each metric as a scalar at `step`, the end mark.
    No experiment summary: TensorBoard takes a logdir's columns from the first one it finds (one task's
    columns for every run in a shared logdir); without one it gathers the hparams of every session and,
    as metrics, the scalars in the session folders, which hold nothing but these summary values. A
    resumed run replaces the session its earlier part wrote (TensorBoard would show that one's config)."""
    # lazy for speed: tensorboard is imported only when the hparams session is written
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    for earlier in folder.glob("events.out.tfevents.*"):
        earlier.unlink()
    _, start, end = hparams(params, metrics)
    writer = SummaryWriter(str(folder))
    try:
        file_writer = writer._get_file_writer()
        file_writer.add_summary(start)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
        file_writer.add_summary(end)
    finally:
        writer.close()


#: top-level keys that are plumbing, not hyperparameters: left out of TensorBoard's HPARAMS table
NOT_HPARAMS = ("paths", "hydra", "logger", "callbacks", "lightning_module", "datamodule", "task_order")


def flatten_config(cfg: DictConfig) -> dict[str, Any]:
    """`model/arch`-style keys with scalar values (lists as text) for the hparams table."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    tree = {k: v for k, v in tree.items() if k not in NOT_HPARAMS}
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node
        else:
            flat[prefix] = str(node)

    walk(tree, "")
    return flat
