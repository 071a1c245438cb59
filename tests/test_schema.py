"""The typed settings: every task's `data.*` and `model.*` parse into their schema, with its defaults,
and a wrong key or value is one ConfigError line that names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from datamodules.common import SplitDataModule
from datamodules.folder import FolderDataModule, FolderSettings
from datamodules.lsp import LSPDataModule, LSPSettings
from datamodules.mnist import MNISTDataModule
from datamodules.settings import DataSettings
from tasks.base import TaskModule, freeze_schedule
from tasks.defect.settings import DEFAULT_SETTINGS, DefectMetrics
from tasks.embed.net import TransferSettings
from tasks.embed.symbols import check_symbols
from tasks.pose.model import PoseModel
from tests.conftest import compose_config
from visionlab.errors import ConfigError
from visionlab.keys import tasks_available
from visionlab.schema import Settings
from visionlab.targets import resolve_class
from visionlab.validation import task_classes, validate_config

#: each task with every model option its config may choose
MODEL_OPTIONS = {
    "finetune": ["alexnet", "vgg16", "resnet10", "resnet18"],
    "pose": ["deeppose"],
    "defect": ["autoencoder"],
    "segment": ["fcn"],
    "embed": ["mnist_net", "convnet"],
}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True)


@pytest.mark.parametrize("task", tasks_available())
def test_each_task_config_parses_into_its_typed_settings(task: str, tmp_path) -> None:
    cfg = compose_config("train", [f"task={task}", f"paths.data_dir={tmp_path}"])
    module_cls, data_cls = task_classes(cfg)
    assert issubclass(data_cls, SplitDataModule)
    settings = data_cls.settings_class.parse(_plain(cfg.data))
    # the YAML's values arrive typed, and the schema knows every key the YAML sets
    assert set(cfg.data) <= data_cls.settings_class.keys()
    assert settings.batch_size == cfg.data.batch_size
    assert module_cls.model_settings_class is not None
    for option in MODEL_OPTIONS[task]:
        model = compose_config("train", [f"task={task}", f"model={option}"]).model
        parsed = module_cls.model_settings_class.parse(_plain(model))
        assert parsed.arch == model.arch


def test_every_datamodule_declares_its_settings_by_its_type_parameter() -> None:
    for task in tasks_available():
        cfg = compose_config("train", [f"task={task}"])
        data_cls = resolve_class("datamodule", cfg.datamodule, SplitDataModule, "")
        assert data_cls.settings_class is not DataSettings
        assert issubclass(data_cls.settings_class, DataSettings)
    assert LSPDataModule.settings_class is LSPSettings
    assert FolderDataModule.settings_class is FolderSettings


def test_defaults_live_in_the_schema(tmp_path) -> None:
    """A DataModule built in Python without arguments gets the schema's defaults, and reads them typed."""
    dm = LSPDataModule(str(tmp_path))
    assert isinstance(dm.settings, LSPSettings)
    assert (dm.settings.image_size, dm.settings.train_count, dm.batch_size) == (220, 1000, 32)
    assert MNISTDataModule(str(tmp_path)).settings.mean == [0.1307]
    assert PoseModel.parse(None).dropout == 0.6
    assert DefectMetrics().model_dump() == DEFAULT_SETTINGS
    assert freeze_schedule(None) == (0, 1.0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d: LSPDataModule(d, batchsize=8), "data.batchsize is not a key of LSPSettings; did you mean data.batch_size?"),
        (lambda d: LSPDataModule(d, batch_size="8"), "data.batch_size='8' must be a positive integer"),
        (lambda d: LSPDataModule(d, batch_size=True), "data.batch_size=true must be a positive integer"),
        (lambda d: LSPDataModule(d, pad_value=300), "data.pad_value=300 must be an integer grey level in 0..255"),
        (lambda d: FolderDataModule(d, num_workers=-1), "data.num_workers=-1 must be a non-negative integer or 'auto'"),
        (lambda d: FolderDataModule(d, mean=[0.5]), "data.mean=[0.5] / data.std=[0.229, 0.224, 0.225]: expected 3 values each"),
        (lambda d: MNISTDataModule(d, symbols_test="x"), "transfer.test is set but transfer.train is not"),
        (lambda d: PoseModel.parse({"width": -1}), "model.width=-1 must be a positive number"),
        (lambda d: PoseModel.parse({"arch": "hrnet"}), "model.arch='hrnet' is not a pose model; expected 'deeppose'"),
        (lambda d: DefectMetrics.parse({"bins": 3}), "metrics.bins is not a key of defect's metrics; did you mean metrics.num_bins?"),
        (lambda d: check_symbols({"kk": 5}), "symbols.kk is not a key of embed's symbols; did you mean symbols.k?"),
        (lambda d: TransferSettings.parse({"fromckpt": "x"}), "transfer.fromckpt is not a key of embed's transfer; did you mean transfer.from_ckpt?"),
    ],
)  # fmt: skip
def test_a_wrong_setting_is_one_line_naming_it(tmp_path, build, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(str(tmp_path))
    assert str(err.value) == message or str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_python_tuples_are_taken_as_lists(tmp_path) -> None:
    dm = FolderDataModule(str(tmp_path), split_fractions=(0.8, 0.1, 0.1), mean=(0.5, 0.5, 0.5))
    assert dm.fractions == (0.8, 0.1, 0.1)
    assert dm.settings.mean == [0.5, 0.5, 0.5]


def test_settings_are_read_only(tmp_path) -> None:
    settings = LSPDataModule(str(tmp_path)).settings
    with pytest.raises(ValueError, match="frozen"):
        settings.image_size = 64  # type: ignore[misc]


def test_every_task_module_has_typed_model_settings() -> None:
    for task in tasks_available():
        module_cls, _ = task_classes(compose_config("train", [f"task={task}"]))
        assert issubclass(module_cls, TaskModule)
        assert module_cls.model_settings_class is not None
        assert issubclass(module_cls.model_settings_class, Settings)


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("experiment", "hparams_search") for o in _files(g)]
)
def test_every_experiment_and_search_passes_the_typed_checks(group: str, option: str, tmp_path: Path) -> None:
    """Strict types would refuse e.g. `image_size: 220.0`: every shipped file passes the checks a run
    starts with (finetune_transfer needs the checkpoint its first step writes, and says so)."""
    cfg = compose_config("train", [f"{group}={option}", f"paths.data_dir={tmp_path}"])
    if option == "finetune_transfer":
        with pytest.raises(
            ConfigError, match=r"it is written by `python train.py experiment=finetune_pretrain`"
        ):
            validate_config(cfg)
    else:
        validate_config(cfg)
