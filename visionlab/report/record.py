"""What a run writes for its report at its end (tables.json): the command, the machine, the settings
that differ from the task's defaults, and the task's tables that metrics.json does not hold."""

from __future__ import annotations

import logging
import os
import platform
import shlex
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from visionlab.files import write_json
from visionlab.report.collect import TABLES_FILE
from visionlab.report.settings import changed_settings, task_defaults

log = logging.getLogger(__name__)


def record_run(cfg: DictConfig, run_dir: Path, module: Any, kind: str) -> dict[str, Any]:
    """Write `run_dir/tables.json` for the report of this run (train or evaluate) and return it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    job, overrides = hydra_job()
    info: dict[str, Any] = {
        "task": str(cfg.task_name),
        "kind": kind,
        "command": " ".join(["python", f"{job or kind}.py", *map(shlex.quote, overrides)]) if job else None,
        "overrides": overrides,
        "headline": list(getattr(type(module), "summary_metrics", ())),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "elapsed_s": _elapsed(run_dir),
        "machine": machine(getattr(module, "_trainer", None)),
        "settings_changed": _settings_changed(config, str(cfg.task_name), kind),
        "tables": module.report_tables(),
    }
    write_json(run_dir / TABLES_FILE, info)
    return info


def hydra_job() -> tuple[str | None, list[str]]:
    """The entry point's name (train / evaluate) and the command line's overrides (with any
    `hydra.searchpath=`, which a task of one's own needs), when Hydra ran it."""
    from hydra.core.hydra_config import HydraConfig  # lazy for speed, like the other report modules

    if not HydraConfig.initialized():
        return None, []
    hydra = HydraConfig.get()
    return str(hydra.job.name), [*searchpath_overrides(), *map(str, hydra.overrides.task)]


def searchpath_overrides() -> list[str]:
    """The command line's `hydra.searchpath=[...]` (a task of one's own needs its config folder on
    the command line to run again), [] outside Hydra or without one."""
    from hydra.core.hydra_config import HydraConfig  # lazy for speed, like the other report modules

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.hydra if str(o).startswith("hydra.searchpath=")]


def hydra_searchpath() -> list[str]:
    """The running command's `hydra.searchpath` (config folders beside conf/), [] outside Hydra."""
    from hydra.core.hydra_config import HydraConfig  # lazy for speed, like the other report modules

    return [str(p) for p in HydraConfig.get().searchpath] if HydraConfig.initialized() else []


def machine(trainer: Any = None) -> dict[str, Any]:
    """Host, OS, CPU, library versions and the device the trainer ran on."""
    import lightning  # lazy for speed: the report command reads folders without torch
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(terse=True),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }
    if trainer is not None:
        device = trainer.strategy.root_device
        info.update(
            device=str(device),
            devices=int(trainer.num_devices),
            precision=str(trainer.precision),
        )
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _elapsed(run_dir: Path) -> float | None:
    """Seconds since the run wrote its config.yaml (its start), for the whole run including tests."""
    path = run_dir / "config.yaml"
    return round(time.time() - path.stat().st_mtime, 1) if path.is_file() else None


def _settings_changed(config: dict[str, Any], task: str, kind: str) -> list[list[str]] | None:
    """Rows of the settings table, or None when the task's defaults cannot be composed here."""
    try:
        return changed_settings(config, task_defaults(task, kind, searchpath=hydra_searchpath()))
    except Exception as err:  # the report then says so instead of listing every setting
        log.debug("task defaults not composed: %s", err)
        return None
