"""Task name -> (LightningModule, LightningDataModule) classes, imported only when the task is used."""

from __future__ import annotations

import importlib
from typing import Any

from visionlab.errors import ConfigError

#: task_name -> ("module:Class" of the LightningModule, "module:Class" of the LightningDataModule)
TASKS: dict[str, tuple[str, str]] = {
    "finetune": ("tasks.finetune:FinetuneTask", "datamodules.folder:FolderDataModule"),
    "pose": ("tasks.pose:PoseTask", "datamodules.lsp:LSPDataModule"),
    "defect": ("tasks.defect:DefectTask", "datamodules.mvtec:MVTecDataModule"),
    "segment": ("tasks.segment:SegmentTask", "datamodules.voc:VOCDataModule"),
    "embed": ("tasks.embed:EmbedTask", "datamodules.mnist:MNISTDataModule"),
}


def _load(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def task_classes(task_name: str) -> tuple[type, type]:
    """The LightningModule and LightningDataModule classes of `task_name`."""
    if task_name not in TASKS:
        raise ConfigError(f"task={task_name!r} is not known; expected one of {sorted(TASKS)}")
    module_ref, data_ref = TASKS[task_name]
    return _load(module_ref), _load(data_ref)
