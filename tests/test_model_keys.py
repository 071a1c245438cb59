"""One name per idea in `model.*` (arch, backbone, freeze_backbone_epochs, backbone_lr_ratio): the old
names are upgraded in checkpoints written before the rename, which load with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning
import pytest
import torch

from tasks.base import freeze_schedule
from tasks.defect import DefectTask
from tasks.finetune import FinetuneTask
from tasks.segment import SegmentTask
from visionlab.checkpointing import load_task_checkpoint, read_task_checkpoint
from visionlab.errors import ConfigError
from visionlab.keys import RENAMED_MODEL_KEYS, model_keys, upgraded_model

OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
CLASSES = {"class_names": [f"c{k}" for k in range(3)], "image_size": 32}


@pytest.mark.parametrize(
    ("saved", "upgraded"),
    [
        (  # finetune: frozen until epoch 2
            {"arch": "resnet10", "freeze_backbone": True, "unfreeze_epoch": 2, "backbone_lr_ratio": 0.1},
            {"arch": "resnet10", "freeze_backbone_epochs": 2, "backbone_lr_ratio": 0.1},
        ),
        (  # finetune: frozen for the whole run
            {"arch": "resnet18", "freeze_backbone": True, "unfreeze_epoch": None},
            {"arch": "resnet18", "freeze_backbone_epochs": "all"},
        ),
        (  # finetune: not frozen (an unfreeze_epoch without freeze_backbone did nothing)
            {"arch": "vgg16", "freeze_backbone": False, "unfreeze_epoch": 3},
            {"arch": "vgg16", "freeze_backbone_epochs": 0},
        ),
        (  # segment
            {"encoder": "resnet34", "freeze_encoder_epochs": 1, "encoder_lr_ratio": 0.5, "encoder_stages": 4},
            {
                "arch": "fcn",
                "backbone": "resnet34",
                "freeze_backbone_epochs": 1,
                "backbone_lr_ratio": 0.5,
                "encoder_stages": 4,
            },
        ),
        ({"name": "autoencoder", "loss": "mse"}, {"arch": "autoencoder", "loss": "mse"}),  # defect
        ({"arch": "deeppose", "width": 1.0}, {"arch": "deeppose", "width": 1.0}),  # already new: as is
    ],
)
def test_saved_model_keys_are_upgraded_to_what_they_meant(saved: dict, upgraded: dict) -> None:
    assert upgraded_model(saved) == upgraded


def test_no_model_option_uses_an_old_name() -> None:
    assert not set(RENAMED_MODEL_KEYS) & model_keys()
    assert {"arch", "freeze_backbone_epochs", "backbone_lr_ratio"} <= model_keys("fcn") & model_keys(
        "resnet18"
    )
    assert "backbone" in model_keys("fcn") and "arch" in model_keys("autoencoder")


@pytest.mark.parametrize("value", [-1, 1.5, True, "some"])
def test_freeze_backbone_epochs_is_a_count_or_all(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"model\.freeze_backbone_epochs=.* must be an integer >= 0 or all"):
        freeze_schedule({"freeze_backbone_epochs": value})
    assert freeze_schedule({"freeze_backbone_epochs": "all"}) == (None, 1.0)
    assert freeze_schedule({}) == (0, 1.0)


def _save(module: Any, hparams: dict[str, Any], task: str, path: Path) -> Path:
    """A checkpoint of `module`'s weights with the given (old-form) hyperparameters, as train.py wrote them."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hparams,
            "task_name": task,
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def test_old_segment_checkpoint_loads_its_backbone_and_freeze_schedule(tmp_path: Path) -> None:
    small = {"encoder_stages": 2, "decoder_channels": [8, 8, 8]}
    new = {"arch": "fcn", "backbone": "resnet34", "freeze_backbone_epochs": 1, "backbone_lr_ratio": 0.5}
    module = SegmentTask(model={**new, **small}, optimizer=OPTIMIZER, data_info=CLASSES)
    old = {"encoder": "resnet34", "freeze_encoder_epochs": 1, "encoder_lr_ratio": 0.5, **small}
    hparams = {"model": old, "optimizer": OPTIMIZER, "scheduler": None, "data_info": CLASSES}
    ckpt = _save(module, hparams, "segment", tmp_path / "old.ckpt")

    loaded = load_task_checkpoint(SegmentTask, ckpt, "segment")
    assert loaded.hparams.model == {**new, **small}  # resnet34, not the default resnet18
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in module.state_dict().items())
    assert loaded.backbone_frozen(epoch=0) and not loaded.backbone_frozen(epoch=1)
    groups = {g["name"]: g["lr"] for g in loaded.parameter_groups()}
    assert groups["backbone"] == pytest.approx(0.5 * groups["head"])
    assert read_task_checkpoint(ckpt, "segment")["hyper_parameters"]["model"]["backbone"] == "resnet34"


@pytest.mark.parametrize(("unfreeze_epoch", "frozen_at_2"), [(None, True), (2, False)])
def test_old_finetune_checkpoint_keeps_its_freeze_schedule(
    tmp_path: Path, unfreeze_epoch: int | None, frozen_at_2: bool
) -> None:
    model = {"arch": "resnet10", "weights": None, "num_classes": None, "dropout": None}
    module = FinetuneTask(model=model, optimizer=OPTIMIZER, data_info=CLASSES)
    old = {**model, "freeze_backbone": True, "unfreeze_epoch": unfreeze_epoch, "backbone_lr_ratio": 0.1}
    hparams = {"model": old, "optimizer": OPTIMIZER, "scheduler": None, "data_info": CLASSES}
    loaded = load_task_checkpoint(
        FinetuneTask, _save(module, hparams, "finetune", tmp_path / "old.ckpt"), "finetune"
    )
    assert "freeze_backbone" not in loaded.hparams.model and "unfreeze_epoch" not in loaded.hparams.model
    assert loaded.backbone_frozen(epoch=1) and loaded.backbone_frozen(epoch=2) == frozen_at_2
    assert loaded.freeze_settings() == (unfreeze_epoch, 0.1)


def test_old_defect_checkpoint_names_its_network_arch(tmp_path: Path) -> None:
    model = {"input_size": 32, "channels": [8, 16, 32], "bottleneck": 16, "loss": "mse"}
    module = DefectTask(
        model={"arch": "autoencoder", **model}, optimizer=OPTIMIZER, data_info={"image_size": 32}
    )
    hparams = {
        "model": {"name": "autoencoder", **model},
        "optimizer": OPTIMIZER,
        "data_info": {"image_size": 32},
    }
    loaded = load_task_checkpoint(
        DefectTask, _save(module, hparams, "defect", tmp_path / "old.ckpt"), "defect"
    )
    assert loaded.hparams.model == {"arch": "autoencoder", **model}
