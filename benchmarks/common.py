"""What every benchmark shares: the tasks, the configs they compose (as `train.py` would, with
per-task overrides), the device and torch flags of a config, and the machine a number belongs to."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from benchmarks.machine import cpu_model
from visionlab.keys import tasks_available

#: every task of the framework (one per conf/task/*.yaml), in the order the tables list them
TASKS = tuple(tasks_available())
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def parse_tasks(text: str) -> list[str]:
    """`pose,defect` -> ["pose", "defect"]; an unknown name is a ValueError naming it."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        raise ValueError(f"--tasks {text!r}: expected a comma-separated subset of {','.join(TASKS)}")
    return tasks


def overrides_for(task: str, overrides: Sequence[str]) -> list[str]:
    """The Hydra overrides that apply to `task`: plain ones apply to every task, `pose:key=value`
    only to the task named before the colon."""
    chosen = []
    for item in overrides:
        prefix, colon, rest = item.partition(":")
        if colon and prefix in TASKS and "=" in rest:
            if prefix == task:
                chosen.append(rest)
        else:
            chosen.append(item)
    return chosen


def compose_task(task: str, overrides: Sequence[str], run_dir: Path) -> tuple[DictConfig, str]:
    """The config `python train.py task=<task> <overrides>` would compose, writing into `run_dir`,
    and the name of the model config it chose (for the table)."""
    args = [f"task={task}", *overrides_for(task, overrides), f"paths.run_dir={run_dir}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=args, return_hydra_config=True)
    model = str(cfg.hydra.runtime.choices.get("model", "?"))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, model


def device_of(cfg: DictConfig) -> torch.device:
    """The device the Trainer built from `cfg.trainer` trains on."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def apply_torch_flags(cfg: DictConfig) -> None:
    """The global flags the Trainer sets (cudnn autotuning, determinism, matmul precision), so that
    the bound and the hand loop run under the same ones as the real path."""
    deterministic = cfg.trainer.get("deterministic")
    benchmark = cfg.trainer.get("benchmark")
    if deterministic and benchmark is None:
        benchmark = False
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)
    if isinstance(deterministic, bool):
        torch.use_deterministic_algorithms(deterministic)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.set_float32_matmul_precision("high")


def environment(device: torch.device) -> dict[str, Any]:
    """The machine and versions a measurement belongs to."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def device_name(device: torch.device) -> str:
    """`NVIDIA H100 80GB HBM3`, or the CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB since it started (Linux `VmHWM`, which, unlike
    `ru_maxrss`, does not carry the parent's size over a fork and exec); None where unknown."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None
