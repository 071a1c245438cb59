"""Every config file composes, and the keys the framework relies on are present."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config

CONF = Path(CONF_DIR)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("entry", ["train", "evaluate"])
def test_each_task_composes(task: str, entry: str) -> None:
    extra = ["ckpt_path=x.ckpt"] if entry == "evaluate" else []
    cfg = compose_config(entry, [f"task={task}", *extra])
    assert cfg.task_name == task
    for key in ("model", "data", "optimizer", "monitor", "trainer", "paths"):
        assert key in cfg, f"task={task} lacks {key}"
    OmegaConf.to_container(cfg.data, resolve=True)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_each_experiment_composes(experiment: str) -> None:
    cfg = compose_config("train", [f"experiment={experiment}"])
    assert cfg.task_name in experiment


@pytest.mark.parametrize("group", ["trainer", "logger", "callbacks", "debug"])
def test_each_group_option_composes(group: str) -> None:
    for option in options(group):
        cfg = compose_config("train", [f"{group}={option}"])
        assert cfg.trainer.max_epochs >= 1


def test_finetune_models_are_selectable() -> None:
    for arch in ("alexnet", "vgg16", "resnet18"):
        assert compose_config("train", [f"model={arch}"]).model.arch == arch


def test_experiments_reproduce_the_reference_comparison() -> None:
    alex = compose_config("train", ["experiment=finetune_alexnet"])
    vgg = compose_config("train", ["experiment=finetune_vgg16"])
    assert (alex.model.arch, vgg.model.arch) == ("alexnet", "vgg16")
    assert alex.optimizer == vgg.optimizer and alex.optimizer._target_ == "torch.optim.SGD"
    assert alex.data == vgg.data


def test_stage_is_a_top_level_integer() -> None:
    assert compose_config("train", ["stage=3"]).stage == 3


def test_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONLAB_DATA_DIR", "/somewhere/data")
    assert compose_config("train", []).paths.data_dir == "/somewhere/data"


@pytest.mark.parametrize("search", options("hparams_search"))
def test_each_search_space_names_existing_keys(search: str) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={search}"], return_hydra_config=True)
    assert cfg.task_name == search.removesuffix("_optuna")
    assert cfg.hydra.sweeper.direction == ("maximize" if cfg.monitor.mode == "max" else "minimize")
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", (
            f"{search}: {key} is not a config key"
        )


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path) -> None:
    import visionlab

    base = str(tmp_path / "finetune" / "2026-01-01_00-00-00")
    first = visionlab._unique_dir(base)
    visionlab._claimed.clear()  # as if a second process started in the same second
    second = visionlab._unique_dir(base)
    assert first == base and second == base + "_2"
    assert visionlab._unique_dir(base) == second  # stable within one process


def test_parallel_jobs_generate_an_embedded_set_once(tmp_path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(3) as pool:
        roots = list(pool.map(_generate_slowly, [tmp_path] * 3))
    assert len(set(roots)) == 1
    assert (tmp_path / "generations").read_text() == "x"  # one process generated, two reused it


def _generate_slowly(base):
    import time

    from datamodules.synthetic import ensure_generated

    def generate(root, n):
        with (base / "generations").open("a") as f:
            f.write("x" * n)
        time.sleep(0.5)

    return str(ensure_generated(base / "set", generate, n=1))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stage=0", "stage=0 must be an integer >= 1"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer >= 1"),
        ("seed=-3", "seed=-3 must be an integer >= 0"),
        ("monitor.mode=up", "monitor.mode='up' must be 'min' or 'max'"),
        ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
        ("optimizer.lr=-1", "optimizer.lr=-1 must be a positive number"),
        ("model.dropout=1.0", "model.dropout=1.0 must be in [0, 1)"),
        ("optimizer._target_=torch.optim.RMSprp", "cannot be imported; did you mean torch.optim.RMSprop?"),
        ("compile=fast", "compile='fast' must be true, false or one of"),
        ("data.gpu_augment=[{name: Blur}]", "data.gpu_augment[0].name='Blur' is not a kornia.augmentation"),
        (
            "data.gpu_augment=[{name: RandomResizedCrop, size: [16, 16]}]",
            "data.gpu_augment turns 32x32 batches into 16x16",
        ),
        ("data.on_bad_file=ignore", "data.on_bad_file='ignore' must be 'raise' or 'skip'"),
        ("ckpt_path=nowhere.ckpt", "ckpt_path=nowhere.ckpt is not a file"),
    ],
)
def test_config_values_are_checked_before_training(make_cfg, override: str, message: str) -> None:
    from visionlab.errors import ConfigError
    from visionlab.runner import train

    with pytest.raises(ConfigError, match=re.escape(message)):
        train(make_cfg(override))


def test_unknown_keys_are_refused_by_name() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=r"data\.foo"):
        compose_config("train", ["data.foo=1"])


@pytest.mark.parametrize(
    ("task", "override", "message"),
    [
        ("finetune", "model.arch=resnet999", "model.arch='resnet999' is not a finetune model"),
        ("finetune", "model.weights=IMAGENET1K_V1", "model.weights='IMAGENET1K_V1': "),
        ("finetune", "data.image_size=16", "data.image_size=16 is too small for model.arch=resnet10"),
        ("pose", "model.width=0", "model.width=0 must be a positive number"),
        ("defect", "metrics.thresholds=[]", "metrics.thresholds=[] must be a non-empty list"),
        ("defect", "model.loss=l1", "model.loss='l1' must be one of"),
        ("segment", "model.backbone=vgg16", "model.backbone='vgg16' must be one of"),
        ("segment", "model.arch=unet", "model.arch='unet' is not a segment model; expected 'fcn'"),
        ("defect", "model.arch=vae", "model.arch='vae' is not a defect model; expected 'autoencoder'"),
        (
            "finetune",
            "model.freeze_backbone_epochs=-1",
            "model.freeze_backbone_epochs=-1 must be an integer >= 0 or all",
        ),
        ("segment", "model.backbone_lr_ratio=0", "model.backbone_lr_ratio=0 must be a positive number"),
        # the keys renamed so that one idea has one name (added with + they pass Hydra; train refuses them)
        (
            "segment",
            "+model.encoder=resnet34",
            "model.encoder=resnet34 is the old name; use model.backbone=resnet34",
        ),
        (
            "segment",
            "+model.freeze_encoder_epochs=2",
            "model.freeze_encoder_epochs=2 is the old name; use model.freeze_backbone_epochs=2",
        ),
        (
            "segment",
            "+model.encoder_lr_ratio=0.1",
            "model.encoder_lr_ratio=0.1 is the old name; use model.backbone_lr_ratio=0.1",
        ),
        (
            "finetune",
            "+model.freeze_backbone=true",
            "model.freeze_backbone=true is the old form; use model.freeze_backbone_epochs=all",
        ),
        (
            "finetune",
            "+model.unfreeze_epoch=3",
            "model.unfreeze_epoch=3 is the old form; use model.freeze_backbone_epochs=3",
        ),
        (
            "defect",
            "+model.name=autoencoder",
            "model.name=autoencoder is the old name; use model.arch=autoencoder",
        ),
        ("embed", "model.arch=lenet", "model.arch='lenet' is not an embed model"),
        ("embed", "symbols.k=0", "symbols.k=0 must be a positive integer"),
        ("segment", "scheduler._target_=os.system", "scheduler._target_='os.system' is not allowed"),
        ("pose", "optimizer.lr=0", "optimizer.lr=0 must be a positive number"),
        # the task's classes, named by path in its config
        (
            "finetune",
            "lightning_module=tasks.finetune.FinetuneTsk",
            "lightning_module='tasks.finetune.FinetuneTsk': tasks.finetune has no FinetuneTsk; "
            "did you mean tasks.finetune.FinetuneTask?",
        ),
        (
            "pose",
            "lightning_module=tasks.nowhere.PoseTask",
            "lightning_module='tasks.nowhere.PoseTask' cannot be imported",
        ),
        (
            "segment",
            "datamodule=tasks.segment.SegmentTask",
            "datamodule='tasks.segment.SegmentTask' is not a subclass of",
        ),
        ("defect", "lightning_module=DefectTask", "lightning_module='DefectTask' must be a dotted path"),
        (
            "embed",
            "task_name=pose",
            "task_name='pose' but lightning_module=tasks.embed.EmbedTask has task_name='embed'",
        ),
    ],
)
def test_task_settings_are_checked_before_any_data_is_loaded(
    tmp_path, monkeypatch: pytest.MonkeyPatch, task: str, override: str, message: str
) -> None:
    from visionlab.errors import ConfigError
    from visionlab.runner import train

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached weights, whatever this machine has

    data_dir = tmp_path / "data"
    cfg = compose_config(
        "train", [f"task={task}", override, f"paths.data_dir={data_dir}", f"paths.run_dir={tmp_path / 'run'}"]
    )
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not data_dir.exists() or not any(data_dir.iterdir())  # nothing was generated or read
