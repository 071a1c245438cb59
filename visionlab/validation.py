"""The checks a run starts with: every key and value of the composed config, the task's classes,
`compile=`, DDP inside a multirun; all before any data is generated or read, each a one-line
ConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tasks.base import TaskModule, plain
from visionlab.callbacks import check_callbacks
from visionlab.errors import ConfigError
from visionlab.keys import CONF_DIR, check_keys
from visionlab.loggers import check_loggers
from visionlab.optim import check_optimizer, check_scheduler
from visionlab.targets import resolve_class


def validate_config(cfg: DictConfig) -> None:
    """Checks of the keys every task shares, before any data is loaded; the task's DataModule and
    LightningModule check their own keys (data.*, model.*) when they are built."""

    def integer(key: str, minimum: int) -> None:
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}")

    integer("stage", 1)
    integer("trainer.max_epochs", 1)
    integer("seed", 0)
    dropout = OmegaConf.select(cfg, "model.dropout")
    if dropout is not None and (
        isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1
    ):
        raise ConfigError(f"model.dropout={dropout!r} must be in [0, 1)")
    if cfg.get("monitor") is not None and cfg.monitor.get("mode") not in ("min", "max"):
        raise ConfigError(f"monitor.mode={cfg.monitor.get('mode')!r} must be 'min' or 'max'")
    if cfg.get("run_test") not in (None, True, False):
        raise ConfigError(f"run_test={cfg.get('run_test')!r} must be true or false")
    compile_mode(cfg.get("compile"))
    if cfg.get("optimizer") is not None:
        check_optimizer(plain(cfg.optimizer))  # its _target_ is resolved here, built in training
    check_scheduler(plain(cfg.get("scheduler")))
    check_callbacks(cfg.get("callbacks"))  # classes and keys checked here, objects built in the run
    check_loggers(cfg.get("logger"))
    module_cls, data_cls = task_classes(cfg)
    check_keys(cfg, data_cls, _choice("model"), _conf_dirs())
    module_cls.check_config(cfg)


def task_classes(cfg: DictConfig) -> tuple[type[TaskModule], type[pl.LightningDataModule]]:
    """The task's LightningModule and DataModule classes, named by its config's `lightning_module` and
    `datamodule` (checked before any data work: a wrong path is one ConfigError line)."""
    module_cls = resolve_class(
        "lightning_module", cfg.get("lightning_module"), TaskModule, "tasks.finetune.FinetuneTask"
    )
    data_cls = resolve_class(
        "datamodule", cfg.get("datamodule"), pl.LightningDataModule, "datamodules.folder.FolderDataModule"
    )
    if module_cls.task_name != cfg.get("task_name"):
        raise ConfigError(
            f"task_name={cfg.get('task_name')!r} but lightning_module={cfg.lightning_module} has "
            f"task_name={module_cls.task_name!r}; they must be the same (checkpoints are checked by it)"
        )
    return module_cls, data_cls


def _conf_dirs() -> tuple[Path, ...]:
    """The config folders of the command line's search path (conf/ and any `hydra.searchpath` or
    `--config-dir`), where the model options of a task of one's own are found."""
    if not HydraConfig.initialized():
        return (CONF_DIR,)
    sources = HydraConfig.get().runtime.config_sources
    found = [Path(str(s.path)) for s in sources if s.schema == "file" and s.path]
    return tuple(dict.fromkeys([*found, CONF_DIR]))


def _choice(group: str) -> str | None:
    """The option of config group `group` on the command line's composition (None outside Hydra)."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice else None


#: what `compile=` takes besides true/false: torch.compile's modes
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value: Any) -> str | None:
    """The torch.compile mode of `compile=` (true = "default"; false/null = no compilation)."""
    if value in (None, False):
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise ConfigError(f"compile={value!r} must be true, false or one of {list(COMPILE_MODES)}")
    return str(value)


def check_ddp_in_multirun(cfg: DictConfig) -> None:
    """Refuse several devices per job inside a local multirun: Lightning's DDP launcher re-executes
    the script per rank, which a local sweep launcher cannot host (see README, DDP and multirun)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    devices = cfg.trainer.get("devices", 1)
    count = (
        len(devices)
        if not isinstance(devices, (int, str))
        else (int(devices) if str(devices).isdigit() else 2)
    )
    launcher = str(HydraConfig.get().runtime.choices.get("hydra/launcher", "basic"))
    if (count > 1 or int(cfg.trainer.get("num_nodes", 1)) > 1) and "submitit" not in launcher:
        raise ConfigError(
            f"trainer.devices={devices} inside a local multirun: run one device per job (trainer.devices=1), "
            "or use hydra/launcher=submitit_slurm, where each job owns its devices"
        )
