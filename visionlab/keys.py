"""The keys each config group takes, so an unknown key (a typo, or one added with `+group.key=...`)
is refused by name, with the nearest valid key, before any data is generated or read."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionlab.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

#: the config groups whose options were once chosen with a `name:` key (`optimizer.name=adamw`)
RENAMED_GROUPS = ("optimizer", "scheduler")


def nearest(key: str, valid: Iterable[str]) -> str | None:
    """The valid key closest to `key` in spelling, or None when none is close."""
    matches = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_key_message(group: str, key: str, valid: Iterable[str], what: str = "") -> str:
    """`<group>.<key> is not a key of <what>; did you mean <group>.<match>?` (or the valid keys)."""
    valid = sorted(set(valid))
    where = what or group
    match = nearest(key, valid)
    hint = f"did you mean {group}.{match}?" if match else f"expected one of {', '.join(valid)}"
    return f"{group}.{key} is not a key of {where}; {hint}"


def renamed_key_message(key: str, value: str) -> str:
    """For `optimizer.name=<x>` / `scheduler.name=<x>`, the form before these became config groups:
    the command line that picks the same option now (`optimizer=<x>`)."""
    group = key.partition(".")[0]
    options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    if value in options:
        return f"{key}={value} is the old form; use {group}={value}"
    torch_form = "torch.optim.<Class>" if group == "optimizer" else "torch.optim.lr_scheduler.<Class>"
    return (
        f"{key}={value} is the old form; use {group}=<{'|'.join(options)}> or {group}._target_={torch_form}"
    )


def keyword_parameters(fn: Any, skip: Iterable[str] = ()) -> set[str] | None:
    """The keyword parameters of `fn`, or None when it takes **kwargs (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    skip = {"self", *skip}
    return {p.name for p in params if p.name not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL}


@cache
def model_keys(option: str | None = None) -> frozenset[str]:
    """The keys of `conf/model/<option>.yaml`, or of all model options when `option` is None."""
    files = [CONF_DIR / "model" / f"{option}.yaml"] if option else sorted((CONF_DIR / "model").glob("*.yaml"))
    keys: set[str] = set()
    for path in files:
        if path.is_file():
            keys |= set(OmegaConf.load(path).keys())
    return frozenset(str(k) for k in keys)


def check_keys(cfg: Any, data_cls: type | None = None, model_option: str | None = None) -> None:
    """Refuse a key of `trainer`, `data` or `model` that nothing reads (`optimizer` and `scheduler`
    keys are checked against their `_target_` by visionlab.optim).

    trainer: the arguments of lightning's Trainer; data: the task's DataModule arguments; model: the
    keys of the selected `conf/model/*.yaml` (`model_option`; all of them when it is not known)."""
    # lazy for speed: the CLI's one-line errors about unknown keys do not load lightning or torch
    import lightning.pytorch as pl

    def refuse(group: str, keys: Iterable[Any], valid: set[str] | frozenset[str] | None, what: str) -> None:
        if valid is None:
            return
        for key in keys:
            if str(key) not in valid:
                raise ConfigError(unknown_key_message(group, str(key), valid, what))

    trainer = cfg.get("trainer")
    if trainer is not None:
        refuse(
            "trainer",
            trainer.keys(),
            keyword_parameters(
                pl.Trainer.__init__,
                skip=("callbacks", "logger", "default_root_dir", "plugins", "enable_checkpointing"),
            ),
            "lightning's Trainer",
        )
    data = cfg.get("data")
    if data is not None and data_cls is not None:
        refuse(
            "data",
            data.keys(),
            keyword_parameters(data_cls.__init__, skip=("data_dir",)),
            f"{cfg.get('task_name')}'s data",
        )
    model = cfg.get("model")
    if model is not None:
        valid = model_keys(model_option) or model_keys()
        what = f"model={model_option}" if model_option and model_keys(model_option) else "any model"
        refuse("model", model.keys(), valid, what)
