"""Callbacks and loggers from the `_target_` of each entry of the `callbacks` / `logger` groups: built
late from the same allowlist as optimizers, any allowed class added from the command line, a wrong
target or key refused by name before any data work, and the entry keys users override kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ModelSummary
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from tests.conftest import compose_config
from visionlab.callbacks import (
    BATCH_HOOKS,
    EpochLog,
    EpochReseed,
    EpochTimer,
    LearningRates,
    build_callbacks,
)
from visionlab.checkpointing import FiniteLossGuard
from visionlab.errors import ConfigError
from visionlab.loggers import EpochlessTensorBoardLogger
from visionlab.progress import SteadyProgressBar
from visionlab.runner import build_loggers, build_trainer
from visionlab.validation import validate_config

#: a run of 3 optimiser steps (TINY_FINETUNE) without the test phase
QUICK = ["trainer.max_epochs=1", "run_test=false"]
SWA = [
    "+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
    "+callbacks.swa.swa_lrs=0.01",
]


def _entries(tmp_path: Path, group: str, *overrides: str) -> dict:
    """The `group` dict of the train config with `overrides`, resolved as the run resolves it."""
    cfg = compose_config("train", [f"paths.run_dir={tmp_path}", *overrides])
    return OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) is not None else {}


def test_the_default_callbacks_and_loggers_are_built_from_their_targets(tmp_path: Path) -> None:
    callbacks = build_callbacks(_entries(tmp_path, "callbacks"))
    assert [type(c) for c in callbacks] == [
        ModelCheckpoint,
        ModelCheckpoint,
        LearningRates,
        EpochTimer,
        FiniteLossGuard,
        EpochReseed,
        EpochLog,
        SteadyProgressBar,
    ]
    (logger,) = build_loggers(compose_config("train", [f"paths.run_dir={tmp_path}"]))
    assert type(logger) is EpochlessTensorBoardLogger and Path(logger.log_dir) == tmp_path / "tensorboard"


def test_only_the_batch_hooks_a_callback_overrides_are_left_for_lightning_to_call(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.run_dir={tmp_path}", "trainer=cpu"])
    trainer = build_trainer(cfg, build_callbacks(_entries(tmp_path, "callbacks")), False)
    called = {
        type(c).__name__: [h for h in BATCH_HOOKS if callable(getattr(c, h))] for c in trainer.callbacks
    }
    assert called["ModelCheckpoint"] == ["on_train_batch_end"]
    assert {"on_train_batch_end", "on_validation_batch_end"} <= set(called["SteadyProgressBar"])
    assert called["FiniteLossGuard"] == ["on_train_batch_end"]
    assert called["EpochTimer"] == called["EpochLog"] == called["EpochReseed"] == []
    summary = next(c for c in trainer.callbacks if isinstance(c, ModelSummary))  # added by Lightning
    assert not any(callable(getattr(summary, h)) for h in BATCH_HOOKS)
    timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))
    assert callable(timer.on_train_epoch_start) and callable(EpochTimer.on_train_batch_end)  # class untouched


@pytest.mark.parametrize(
    ("overrides", "present", "absent"),
    [
        (["callbacks=early_stopping", "callbacks.early_stopping.patience=3"], EarlyStopping, None),
        (["callbacks=early_stopping", "callbacks.early_stopping=null"], None, EarlyStopping),
        (["callbacks.lr_monitor=null"], None, LearningRates),
    ],
)
def test_the_entry_keys_still_override(tmp_path: Path, overrides: list[str], present, absent) -> None:
    callbacks = build_callbacks(_entries(tmp_path, "callbacks", *overrides))
    kinds = {type(c) for c in callbacks}
    assert (present is None or present in kinds) and (absent is None or absent not in kinds)
    stopping = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert not stopping or (stopping[0].patience == 3 and stopping[0].monitor == "val/acc")


def test_logger_options(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.run_dir={tmp_path}", "logger=csv"])
    assert [type(x) for x in build_loggers(cfg)] == [CSVLogger]
    both = compose_config("train", [f"paths.run_dir={tmp_path}", "logger=tensorboard_csv"])
    assert [type(x) for x in build_loggers(both)] == [EpochlessTensorBoardLogger, CSVLogger]
    assert build_loggers(compose_config("train", ["~logger"])) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+callbacks.swa._target_=os.system"],
            "callbacks.swa._target_='os.system' is not allowed; a target comes from torch.optim.*, lightning.*",
        ),
        (["+callbacks.swa._target_=visionlab.cli.os.system"], "is not a class or function of"),
        (
            ["+callbacks.swa._target_=torch.optim.SGD"],
            "is not a lightning.pytorch.callbacks.callback.Callback",
        ),
        (
            ["+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveragin"],
            "cannot be imported; did you mean lightning.pytorch.callbacks.StochasticWeightAveraging?",
        ),
        (
            [SWA[0], "+callbacks.swa.swa_lrz=0.01"],
            "callbacks.swa.swa_lrz is not a key of lightning.pytorch.callbacks.StochasticWeightAveraging; "
            "did you mean callbacks.swa.swa_lrs?",
        ),
        (["+callbacks.swa.swa_lrs=0.01"], "callbacks.swa has no _target_"),
        (["+callbacks.checkpoint.every=1"], "callbacks.checkpoint.every is not a key of"),
        (["callbacks.epoch_timer._target_=lightning.pytorch.loggers.CSVLogger"], "is not a lightning"),
        (["+logger.csv._target_=lightning.pytorch.loggers.CSVLogger"], None),
        (["logger=csv", "+logger.csv.nam=x"], "logger.csv.nam is not a key of"),
        (
            ["logger.tensorboard._target_=builtins.print"],
            "logger.tensorboard._target_='builtins.print' is not",
        ),
    ],
)
def test_a_wrong_target_or_key_is_one_line_naming_it(overrides: list[str], message: str | None) -> None:
    cfg = compose_config("train", overrides)
    if message is None:  # an added entry with a target of its own is fine
        validate_config(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("option", ["wandb", "mlflow"])
def test_a_logger_whose_package_is_missing_is_refused_before_data(option: str) -> None:
    cfg = compose_config("train", [f"logger={option}"])
    if importlib.util.find_spec(option) is not None:
        validate_config(cfg)  # installed: the entry checks like any other
        return
    with pytest.raises(ConfigError, match=f"needs the {option} package, which is not installed"):
        validate_config(cfg)


def test_a_bad_callback_stops_the_run_before_any_data_is_generated(make_cfg, tmp_path: Path) -> None:
    from visionlab.runner import train

    fresh = tmp_path / "fresh_data"
    for bad in (["+callbacks.swa._target_=os.system"], [SWA[0], "+callbacks.swa.swa_lrz=0.01"]):
        with pytest.raises(ConfigError, match=r"callbacks\.swa"):
            train(make_cfg(*bad, f"paths.data_dir={fresh}"))
        assert not fresh.exists()


def test_a_callback_added_from_the_command_line_runs_and_both_loggers_write(make_cfg) -> None:
    """Stochastic weight averaging and a third checkpoint callback, added by `_target_`, run in a tiny
    fit; logger=tensorboard_csv writes TensorBoard events (with the HPARAMS session) and metrics.csv."""
    from visionlab.runner import train

    extra = [
        "+callbacks.extra._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.extra.dirpath=${paths.run_dir}/extra",
        "+callbacks.extra.filename=extra",
        "+callbacks.extra.every_n_train_steps=1",  # its own state key beside last_checkpoint's
    ]
    cfg = make_cfg(*QUICK, *SWA, *extra, "logger=tensorboard_csv")
    train(cfg)
    run = Path(cfg.paths.run_dir)
    state = torch.load(run / "extra" / "extra.ckpt", weights_only=True)
    swa = [v for k, v in state["callbacks"].items() if k.startswith("StochasticWeightAveraging")]
    assert swa and swa[0]["n_averaged"] >= 1  # it averaged the weights
    assert "callbacks" not in state["hyper_parameters"] and "logger" not in state["hyper_parameters"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "tensorboard" / "hparams").glob("events.out.tfevents.*"))
    assert "train/loss" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
