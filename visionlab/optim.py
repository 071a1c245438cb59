"""Optimizers and learning-rate schedules from the `optimizer` / `scheduler` config groups.

Each is a plain dict with a `_target_` (a dotted path) and its keyword arguments (primitives only, so
checkpoints keep loading with weights_only=True). The target is imported late, in configure_optimizers,
and only from the allowlist of visionlab.targets; the config is checked against the target's signature
before any data work, so an unknown or misplaced key is one ConfigError naming the key and the target."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from visionlab.errors import ConfigError
from visionlab.keys import keyword_parameters, renamed_key_message
from visionlab.targets import call, check_arguments, dotted, resolve_target

#: optimizers built with `fused=True` unless the config says otherwise (same update, fewer kernels)
FUSED_BY_DEFAULT = (torch.optim.Adam, torch.optim.AdamW)
#: what a `scheduler._target_` builds (ReduceLROnPlateau is no LRScheduler in every torch version)
SCHEDULE_KINDS = (LRScheduler, ReduceLROnPlateau)
#: keys of the `scheduler` group that go to Lightning's lr_scheduler dict, not to the schedule
LIGHTNING_KEYS = ("interval", "frequency", "monitor")
#: the targets of the `name:` form that checkpoints written before the config groups hold
SAVED_OPTIMIZERS = {"sgd": "torch.optim.SGD", "adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW"}
SAVED_SCHEDULERS = {
    "cosine": "visionlab.optim.cosine_with_warmup",
    "onecycle": "visionlab.optim.one_cycle",
    "step": "torch.optim.lr_scheduler.StepLR",
    "plateau": "torch.optim.lr_scheduler.ReduceLROnPlateau",
}


# ---- checks of a group's dict ----------------------------------------------------------------
def _check_partial(group: str, value: Any) -> None:
    if value is not True:
        raise ConfigError(f"{group}._partial_={value!r} must be true: the {group} is built late, in training")


def _given(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keys that are set: a key set to null is left out (the target's own default), so a file or
    command line can unset what an earlier one set (e.g. the task's SGD momentum when it picks Adam)."""
    return {key: value for key, value in cfg.items() if value is not None}


def _refuse_name(group: str, cfg: dict[str, Any]) -> None:
    """The `name:` form of before the config groups is refused with the new form."""
    if "name" in cfg:
        raise ConfigError(renamed_key_message(f"{group}.name", str(cfg["name"])))


# ---- checks (before any data work) ---------------------------------------------------------------
def check_optimizer(cfg: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(the optimizer class, its keyword arguments) of an `optimizer` group dict; a target outside the
    allowlist, a key it does not take, or a learning rate that is not a positive number is a ConfigError."""
    cfg = dict(cfg)
    _refuse_name("optimizer", cfg)
    path = cfg.pop("_target_", None)
    target = resolve_target("optimizer", path, torch.optim.Optimizer)
    _check_partial("optimizer", cfg.pop("_partial_", True))
    cfg = _given(cfg)
    check_arguments("optimizer", path, target, cfg, skip="params", unset=True)
    lr = cfg.get("lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr} must be a positive number")
    return target, cfg


def check_scheduler(
    cfg: dict[str, Any] | None,
) -> tuple[Callable[..., Any] | None, dict[str, Any], dict[str, Any]]:
    """(the schedule's class or factory or None, its keyword arguments, Lightning's keys) of a
    `scheduler` group dict; `_target_: null` (scheduler=none) is no schedule."""
    cfg = dict(cfg or {})
    _refuse_name("scheduler", cfg)
    path = cfg.pop("_target_", None)
    partial = cfg.pop("_partial_", True)
    cfg = _given(cfg)
    lightning = {key: cfg.pop(key) for key in LIGHTNING_KEYS if key in cfg}
    if lightning.get("interval", "epoch") not in ("epoch", "step"):
        raise ConfigError(f"scheduler.interval={lightning['interval']!r} must be 'epoch' or 'step'")
    _check_int("frequency", lightning.get("frequency"), 1)
    if path is None:
        if cfg:
            raise ConfigError(
                f"scheduler.{sorted(cfg)[0]} is set but scheduler=none has no schedule to take it"
            )
        return None, {}, lightning
    target = resolve_target("scheduler", path, SCHEDULE_KINDS)
    _check_partial("scheduler", partial)
    check_arguments("scheduler", path, target, cfg, skip="optimizer", unset=True)
    for key, minimum in (("warmup_epochs", 0), ("step_size", 1), ("patience", 0)):
        _check_int(key, cfg.get(key), minimum)
    for key in ("gamma", "factor"):
        value = cfg.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise ConfigError(f"scheduler.{key}={value!r} must be a positive number")
    return target, cfg, lightning


def _check_int(key: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ConfigError(f"scheduler.{key}={value!r} must be an integer >= {minimum}")


# ---- checkpoints written before the config groups ---------------------------------------------------
def saved_form(group: str, cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `_target_` form of an `optimizer` / `scheduler` dict a checkpoint saved in the `name:` form
    (before the config groups), built as it was then; a dict already in the new form is returned as is."""
    if cfg is None or "name" not in cfg:
        return cfg
    cfg = dict(cfg)
    name = str(cfg.pop("name")).lower()
    if group == "optimizer":
        if name != "sgd":  # adam(w) ignored them then
            cfg.pop("momentum", None)
            cfg.pop("nesterov", None)
        return {"_target_": SAVED_OPTIMIZERS.get(name, name), "_partial_": True, **cfg}
    if name not in SAVED_SCHEDULERS:
        return {"_target_": None}
    if name == "plateau":
        cfg = {
            "mode": cfg.get("mode", "max"),
            "factor": cfg.get("gamma", 0.1),
            "patience": cfg.get("patience", 3),
        }
    elif name == "step":
        cfg = {"step_size": cfg.get("step_size", 10), "gamma": cfg.get("gamma", 0.1)}
    else:  # the only key each read then (the others were accepted and ignored)
        read = "warmup_epochs" if name == "cosine" else "pct_start"
        cfg = {read: cfg[read]} if read in cfg else {}
    interval = "step" if name == "onecycle" else "epoch"
    return {"_target_": SAVED_SCHEDULERS[name], "_partial_": True, **cfg, "interval": interval}


# ---- building (in configure_optimizers) -------------------------------------------------------------
def build_optimizer(param_groups: Iterable[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer of an `optimizer` group dict over `param_groups`.

    Adam and AdamW default to `fused=True` (one kernel for all parameters: a ResNet-10 step on one CPU
    core spends 8 ms instead of 50 ms in the optimizer); `optimizer.fused=false` or `optimizer.foreach`
    choose torch's other implementations."""
    target, kwargs = check_optimizer(saved_form("optimizer", cfg) or {})
    if target in FUSED_BY_DEFAULT and "foreach" not in kwargs:
        kwargs.setdefault("fused", True)
    optimizer = call("optimizer", target, (list(param_groups),), kwargs)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"optimizer._target_={dotted(target)} built no {dotted(torch.optim.Optimizer)}")
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: dict[str, Any] | None,
    max_epochs: int,
    monitor: str,
    total_steps: int | None = None,
) -> dict[str, Any] | None:
    """Lightning's lr_scheduler dict of a `scheduler` group dict, or None for no schedule.

    A schedule that takes `max_epochs` or `total_steps` and is not given them gets the run's: the
    epochs, and the number of times it steps (optimiser steps with `interval: step`, else epochs).
    `monitor` is the metric a ReduceLROnPlateau follows unless `scheduler.monitor` names one."""
    target, kwargs, lightning = check_scheduler(saved_form("scheduler", cfg))
    if target is None:
        return None
    interval = str(lightning.get("interval", "epoch"))
    epochs = max(int(max_epochs), 1)
    facts = {
        "max_epochs": epochs,
        "total_steps": max(int(total_steps or epochs), 1) if interval == "step" else epochs,
    }
    takes = keyword_parameters(target) or set()
    kwargs = {**{k: v for k, v in facts.items() if k in takes}, **kwargs}
    scheduler = call("scheduler", target, (optimizer,), kwargs)
    if not isinstance(scheduler, SCHEDULE_KINDS):
        raise ConfigError(f"scheduler._target_={dotted(target)} built no {dotted(SCHEDULE_KINDS)}")
    out: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
    if "frequency" in lightning:
        out["frequency"] = int(lightning["frequency"])
    if isinstance(scheduler, ReduceLROnPlateau) or lightning.get("monitor"):
        out["monitor"] = str(lightning.get("monitor") or monitor)
    return out


# ---- visionlab's schedules ------------------------------------------------------------------------
def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, pct_start: float = 0.15) -> LambdaLR:
    """A linear warm-up from lr/25 over `pct_start` of `total_steps` to the optimizer's lr, then cosine
    annealing to lr/1e4. Short runs gain most from it (per-epoch schedules are coarse then).

    A function of the step alone (LambdaLR saves only the step), so a resume with more epochs stretches
    the schedule instead of failing like OneCycleLR's saved total."""
    steps = max(int(total_steps), 1)
    warmup_steps = max(float(pct_start) * steps, 1.0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.04 + 0.96 * step / warmup_steps
        progress = min((step - warmup_steps) / max(steps - warmup_steps, 1.0), 1.0)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, max_epochs: int, warmup_epochs: int = 0) -> LambdaLR:
    """Per epoch: a linear warm-up over `warmup_epochs`, then cosine annealing to 0 at `max_epochs`;
    a function of the epoch alone, so a resume with more epochs stretches it."""
    warmup = int(warmup_epochs)
    total = max(int(max_epochs), 1)

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, factor)
