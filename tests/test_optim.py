"""Optimizers and schedules from the `optimizer` / `scheduler` config groups: the fused Adam(W) default,
the allowlist of targets, keys checked against the chosen target, any torch optimizer from the command
line, and checkpoints written in the `name:` form of before the groups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config
from visionlab.errors import ConfigError
from visionlab.optim import build_optimizer, build_scheduler, check_optimizer

ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
#: a run of 3 optimiser steps (TINY_FINETUNE), with no logger and no test, to build what it trains
QUICK = ["trainer.max_epochs=1", "run_test=false", "~logger", "callbacks.lr_monitor=null"]


def _groups() -> list[dict]:
    return [{"params": [torch.nn.Parameter(torch.ones(3))]}]


def _group(*overrides: str, group: str = "optimizer") -> dict:
    """The `group` dict of the finetune defaults with `overrides`, as plain values (as hparams hold it)."""
    return OmegaConf.to_container(compose_config("train", list(overrides))[group], resolve=True)


def _validate(*overrides: str) -> None:
    from visionlab.validation import validate_config

    validate_config(compose_config("train", list(overrides)))


@pytest.mark.parametrize("option", ["adam", "adamw"])
def test_adam_variants_are_fused_by_default(option: str) -> None:
    optimizer = build_optimizer(_groups(), _group(f"optimizer={option}"))
    assert type(optimizer).__name__.lower() == option and optimizer.defaults["fused"] is True


@pytest.mark.parametrize("override", [{"fused": False}, {"foreach": True}])
def test_fused_false_or_foreach_choose_the_other_implementations(override: dict) -> None:
    optimizer = build_optimizer(_groups(), {**ADAMW, **override})
    assert not optimizer.defaults["fused"]


def test_fused_and_plain_adamw_take_the_same_step() -> None:
    steps = []
    for fused in (True, False):
        param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        optimizer = build_optimizer([{"params": [param]}], {**ADAMW, "lr": 0.1, "fused": fused})
        param.grad = torch.tensor([0.5, -0.25, 1.0])
        optimizer.step()
        steps.append(param.detach().clone())
    torch.testing.assert_close(steps[0], steps[1])


def test_sgd_with_momentum_from_the_command_line() -> None:
    _validate("optimizer=sgd", "optimizer.momentum=0.9")
    optimizer = build_optimizer(_groups(), _group("optimizer=sgd", "optimizer.momentum=0.9"))
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["lr"] == 4e-3  # the task's lr stays with another optimizer
    assert not optimizer.defaults.get("fused")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=adam", "+optimizer.momentum=0.9"],
            "optimizer.momentum is not a key of torch.optim.Adam",
        ),
        (["task=embed", "optimizer=adam"], "optimizer.momentum is not a key of torch.optim.Adam"),
        (
            ["+optimizer.lrr=0.1"],
            "optimizer.lrr is not a key of torch.optim.AdamW; did you mean optimizer.lr?",
        ),
        (["scheduler=step", "+scheduler.warmup_epochs=1"], "scheduler.warmup_epochs is not a key of"),
        (["+optimizer.name=adamw"], "optimizer.name=adamw is the old form; use optimizer=adamw"),
        (["+scheduler.name=cosine"], "scheduler.name=cosine is the old form; use scheduler=cosine"),
        (["optimizer._partial_=false"], "optimizer._partial_=False must be true"),
        (
            ["scheduler=step", "scheduler.interval=week"],
            "scheduler.interval='week' must be 'epoch' or 'step'",
        ),
    ],
)
def test_a_key_the_target_does_not_take_is_one_line_naming_it(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?").replace("+", r"\+")) as err:
        _validate(*overrides)
    assert "\n" not in str(err.value)


def test_a_key_set_to_null_is_left_out() -> None:
    _validate("task=embed", "optimizer=adam", "optimizer.momentum=null")
    target, kwargs = check_optimizer(_group("task=embed", "optimizer=adam", "optimizer.momentum=null"))
    assert target is torch.optim.Adam and "momentum" not in kwargs


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("os.system", "is not allowed; a target comes from torch.optim.*, lightning.*, visionlab.*"),
        ("builtins.eval", "is not allowed"),
        ("torch.load", "is not allowed"),
        ("torch.optimx.Adam", "is not allowed"),
        ("visionlab.cli.os.system", "is not a class or function of torch.optim.*"),
        ("torch.optim.adam.torch.load", "is not a class or function of torch.optim.*"),
        ("torch.optim.RMSprp", "cannot be imported; did you mean torch.optim.RMSprop?"),
        ("visionlab.optim.one_cycle", "optimizer.lr is not a key of visionlab.optim.one_cycle"),
        ("torch.optim.lr_scheduler.StepLR", "is not a torch.optim.optimizer.Optimizer"),
    ],
)
def test_only_allowlisted_targets_are_imported(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("?", r"\?")):
        build_optimizer(_groups(), {"_target_": target, "lr": 0.1})


@pytest.mark.parametrize("option", sorted(p.stem for p in Path(CONF_DIR, "scheduler").glob("*.yaml")))
def test_each_scheduler_option_builds(option: str) -> None:
    optimizer = build_optimizer(_groups(), ADAMW)
    built = build_scheduler(optimizer, _group(f"scheduler={option}", group="scheduler"), 5, "val/loss", 40)
    if option == "none":
        assert built is None
        return
    assert built["interval"] == ("step" if option == "onecycle" else "epoch")
    if option == "plateau":  # follows the task's monitor, in its direction
        assert built["monitor"] == "val/acc" and built["scheduler"].mode == "max"


def test_one_cycle_runs_over_the_optimiser_steps() -> None:
    optimizer = build_optimizer(_groups(), {**ADAMW, "lr": 1.0})
    scheduler = build_scheduler(optimizer, _group(group="scheduler"), 2, "val/loss", 40)["scheduler"]
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.04) and max(lrs) == pytest.approx(1.0, abs=1e-3)
    assert lrs.index(max(lrs)) == 6 and lrs[-1] < 0.01  # 15% warm-up, then down to nearly 0


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        ({"name": "adamw", "lr": 1e-3, "weight_decay": 0.05}, torch.optim.AdamW),
        ({"name": "adam", "lr": 1e-3, "momentum": 0.9}, torch.optim.Adam),  # ignored then, as now
        ({"name": "sgd", "lr": 0.1, "momentum": 0.5}, torch.optim.SGD),
    ],
)
def test_the_name_form_of_older_checkpoints_still_builds(saved: dict, expected: type) -> None:
    optimizer = build_optimizer(_groups(), saved)
    assert type(optimizer) is expected and optimizer.defaults["lr"] == saved["lr"]
    for name, kind in [("cosine", "LambdaLR"), ("onecycle", "LambdaLR"), ("step", "StepLR")]:
        saved_scheduler = {"name": name, "warmup_epochs": 1, "gamma": 0.5}  # all were accepted then
        built = build_scheduler(optimizer, saved_scheduler, 3, "val/acc", 9)["scheduler"]
        assert type(built).__name__ == kind
    plateau = build_scheduler(optimizer, {"name": "plateau", "gamma": 0.5}, 3, "val/acc")
    assert plateau["monitor"] == "val/acc" and plateau["scheduler"].factor == 0.5
    assert build_scheduler(optimizer, {"name": "none"}, 3, "val/acc") is None


def test_any_torch_optimizer_trains_from_the_command_line(make_cfg) -> None:
    from visionlab.runner import train

    cfg = make_cfg("optimizer._target_=torch.optim.RMSprop", "+optimizer.alpha=0.9", *QUICK)
    train(cfg)
    state = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.RMSprop"
    assert state["global_step"] == 3 and state["optimizer_states"][0]["param_groups"][0]["alpha"] == 0.9


def test_a_checkpoint_of_before_the_groups_loads_evaluates_and_resumes(make_cfg, tmp_path: Path) -> None:
    """A checkpoint whose hparams hold `optimizer: {name: adamw, ...}` (written before the config groups)
    loads with weights_only=True, evaluates, builds its optimizer again, and resumes with ckpt_path=."""
    from tasks.finetune import FinetuneTask
    from visionlab.checkpointing import load_task_checkpoint
    from visionlab.runner import evaluate, train

    first = make_cfg(*QUICK, run="new")
    train(first)
    state = torch.load(Path(first.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    state["hyper_parameters"]["optimizer"] = {"name": "adamw", "lr": 4e-3, "weight_decay": 0.05}
    state["hyper_parameters"]["scheduler"] = {"name": "onecycle"}
    old = tmp_path / "old.ckpt"
    torch.save(state, old)

    module = load_task_checkpoint(FinetuneTask, old, "finetune")
    assert module.hparams.optimizer["name"] == "adamw"
    configured = module.configure_optimizers()
    assert type(configured["optimizer"]) is torch.optim.AdamW and configured["optimizer"].defaults["fused"]
    assert type(configured["lr_scheduler"]["scheduler"]).__name__ == "LambdaLR"

    results = evaluate(make_cfg(f"ckpt_path={old}", name="evaluate", run="eval", base=_evaluate_base()))
    assert 0.0 <= results["test/acc"] <= 1.0

    resumed = make_cfg(f"ckpt_path={old}", *QUICK[1:], "trainer.max_epochs=2", run="resumed")
    train(resumed)
    after = torch.load(Path(resumed.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 2 * state["global_step"]
    assert after["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.AdamW"


def _evaluate_base() -> list[str]:
    from tests.conftest import TINY_FINETUNE

    return [b for b in TINY_FINETUNE if "max_epochs" not in b]
