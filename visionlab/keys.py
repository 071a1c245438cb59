"""The keys each config group takes, so an unknown key (a typo, or one added with `+group.key=...`)
is refused by name, with the nearest valid key, before any data is generated or read."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionlab.errors import ConfigError
from visionlab.schema import Settings, unknown_key_message

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: where a task config without `task_order` comes in `tasks_available`: after those that have one
_UNORDERED = 10**6

#: the config groups whose options were once chosen with a `name:` key (`optimizer.name=adamw`)
RENAMED_GROUPS = ("optimizer", "scheduler")
#: `model.*` keys renamed so that one idea has one name in every task: old key -> new key. The command
#: line and config files are refused with the new name; checkpoints saved with the old keys are upgraded
RENAMED_MODEL_KEYS: dict[str, str] = {
    "name": "arch",  # defect's autoencoder
    "encoder": "backbone",  # segment's ResNet
    "freeze_encoder_epochs": "freeze_backbone_epochs",  # segment
    "encoder_lr_ratio": "backbone_lr_ratio",  # segment
    "freeze_backbone": "freeze_backbone_epochs",  # finetune: true/false, with unfreeze_epoch
    "unfreeze_epoch": "freeze_backbone_epochs",  # finetune: the epoch from which everything trained
}
#: `model.freeze_backbone_epochs` value that keeps the backbone frozen for the whole run
FREEZE_ALL = "all"


def tasks_available(conf_dir: Path = CONF_DIR) -> list[str]:
    """The tasks, one per `conf/task/*.yaml`, in their `task_order` (then by name): what the benchmarks
    run and list, read from the files without composing them."""
    files = (conf_dir / "task").glob("*.yaml")
    return [p.stem for p in sorted(files, key=lambda p: (_task_order(p), p.stem))]


def _task_order(path: Path) -> int:
    """A task config's `task_order` (an integer; missing or not one: after the others)."""
    order = OmegaConf.load(path).get("task_order")
    return order if isinstance(order, int) and not isinstance(order, bool) else _UNORDERED


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


def _as_override(value: Any) -> str:
    """`value` as the command line writes it (true, null, 3, resnet34)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def renamed_model_value(key: str, value: Any) -> str:
    """The `freeze_backbone_epochs` / new-key value meaning what old `model.<key>=<value>` meant."""
    text = _as_override(value)
    if key == "freeze_backbone":
        return FREEZE_ALL if text.lower() == "true" else "0"
    if key == "unfreeze_epoch":
        return FREEZE_ALL if text == "null" else text
    return text


def renamed_model_key_message(key: str, value: Any = None, has_value: bool = True) -> str:
    """For an old `model.*` key (RENAMED_MODEL_KEYS): `model.<old>=<v> is the old name; use
    model.<new>=<v>` ("old form" where the value changed form too)."""
    new = RENAMED_MODEL_KEYS[key]
    if not has_value:
        return f"model.{key} is the old name; use model.{new}"
    old = _as_override(value)
    kind = "form" if key in ("freeze_backbone", "unfreeze_epoch") else "name"
    message = f"model.{key}={old} is the old {kind}; use model.{new}={renamed_model_value(key, value)}"
    if key == "freeze_backbone" and renamed_model_value(key, value) == FREEZE_ALL:
        message += " (or model.freeze_backbone_epochs=N for the old model.unfreeze_epoch=N)"
    return message


def upgraded_model(model: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint's saved `model` dict with the old keys (RENAMED_MODEL_KEYS) under their new names,
    meaning what they meant when it was trained; a dict in the new form is returned as it is."""
    if not isinstance(model, dict) or not set(model) & set(RENAMED_MODEL_KEYS):
        return model
    out: dict[str, Any] = {}
    for key, value in model.items():
        if key in ("freeze_backbone", "unfreeze_epoch"):
            out.setdefault("freeze_backbone_epochs", _saved_freeze_epochs(model))
        elif key in RENAMED_MODEL_KEYS:
            out.setdefault(RENAMED_MODEL_KEYS[key], value)
        else:
            out[key] = value
    if "encoder" in model:  # a segment FCN, saved before it had a model.arch
        out = {"arch": "fcn", **out}
    return out


def _saved_freeze_epochs(model: dict[str, Any]) -> int | str:
    """finetune's old `freeze_backbone` + `unfreeze_epoch` as `freeze_backbone_epochs`: frozen while
    epoch < unfreeze_epoch (null: the whole run), nothing frozen without freeze_backbone."""
    if not model.get("freeze_backbone"):
        return 0
    until = model.get("unfreeze_epoch")
    return FREEZE_ALL if until is None else max(int(until), 0)


def keyword_parameters(fn: Any, skip: Iterable[str] = ()) -> set[str] | None:
    """The keyword parameters of `fn`, or None when it takes **kwargs (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    skip = {"self", *skip}
    return {p.name for p in params if p.name not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL}


@cache
def model_keys(option: str | None = None, conf_dirs: tuple[Path, ...] = (CONF_DIR,)) -> frozenset[str]:
    """The keys of `model/<option>.yaml` in the first of `conf_dirs` that has it (Hydra's search path:
    a task of one's own may bring its model options), or of all model options when `option` is None."""
    if option:
        candidates = (d / "model" / f"{option}.yaml" for d in conf_dirs)
        files = [path for path in candidates if path.is_file()][:1]
    else:
        files = sorted(p for d in conf_dirs for p in (d / "model").glob("*.yaml"))
    keys: set[str] = set()
    for path in files:
        if path.is_file():
            keys |= set(OmegaConf.load(path).keys())
    return frozenset(str(k) for k in keys)


def check_keys(
    cfg: Any,
    data_cls: type | None = None,
    model_option: str | None = None,
    conf_dirs: tuple[Path, ...] = (CONF_DIR,),
) -> None:
    """Refuse a key of `trainer`, `data` or `model` that nothing reads (`optimizer` and `scheduler`
    keys are checked against their `_target_` by visionlab.optim).

    trainer: the arguments of lightning's Trainer; data: the task's DataModule arguments; model: the
    keys of the selected `model/*.yaml` of `conf_dirs` (`model_option`; all of them when it is not known)."""
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
        owner = f"{cfg.get('task_name')}'s data"
        settings_class = getattr(data_cls, "settings_class", None)
        if isinstance(settings_class, type) and issubclass(settings_class, Settings):
            settings_class.parse(OmegaConf.to_container(data, resolve=True), owner)  # keys, types, ranges
        else:  # a DataModule of one's own that takes keyword arguments
            refuse("data", data.keys(), keyword_parameters(data_cls.__init__, skip=("data_dir",)), owner)
    model = cfg.get("model")
    if model is not None:
        for key in model:
            if str(key) in RENAMED_MODEL_KEYS:
                raise ConfigError(renamed_model_key_message(str(key), model.get(key)))
        own = model_keys(model_option, conf_dirs) if model_option else frozenset()
        valid = own or model_keys(None, conf_dirs)
        what = f"model={model_option}" if own else "any model"
        refuse("model", model.keys(), valid, what)
