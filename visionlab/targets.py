"""Objects named by a `_target_` in the config (optimizers, schedules, callbacks, loggers), and the
classes a task config names by path (`resolve_class`).

A target is imported only from ALLOWED_TARGETS, checked on its dotted path and on the module that
defines it; its keys are checked against its signature before any data work, and the object is built
late, where it is used. Config entries stay primitives, so checkpoints load with weights_only=True."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hydra.utils import get_object

from visionlab.errors import ConfigError
from visionlab.keys import keyword_parameters
from visionlab.schema import unknown_key_message

#: the packages a `_target_` may come from (and the module its class or function must be defined in)
ALLOWED_TARGETS = ("torch.optim", "lightning", "visionlab")
#: the optional package each Lightning module needs (its classes import without it, fail when built)
OPTIONAL_PACKAGES = {
    "lightning.pytorch.loggers.wandb": "wandb",
    "lightning.pytorch.loggers.mlflow": "mlflow",
    "lightning.pytorch.loggers.comet": "comet_ml",
    "lightning.pytorch.loggers.neptune": "neptune",
    "lightning.pytorch.callbacks.progress.rich_progress": "rich",
}


def _allowed(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + ".") for prefix in ALLOWED_TARGETS)


def allowed_text() -> str:
    """The allowlist as a message shows it: `torch.optim.*, lightning.*, visionlab.*`."""
    return ", ".join(f"{prefix}.*" for prefix in ALLOWED_TARGETS)


def _typo_hint(path: str) -> str:
    """`; did you mean <module>.<name>?` for a misspelt last part of `path`, else ''."""
    module, _, name = path.rpartition(".")
    try:
        names = [n for n in dir(importlib.import_module(module)) if not n.startswith("_")]
    except Exception:
        return ""
    match = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"; did you mean {module}.{match[0]}?" if match else ""


def _import(path: str) -> Any:
    """Hydra's get_object without its own ERROR log line (the ConfigError says it once, on one line)."""
    hydra_log = logging.getLogger("hydra.utils")
    disabled, hydra_log.disabled = hydra_log.disabled, True
    try:
        return get_object(path)
    finally:
        hydra_log.disabled = disabled


def dotted(kind: Any) -> str:
    """The dotted name of a class or function (or of several: `A or B`), for messages."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(f"{k.__module__}.{k.__qualname__}" for k in kinds)


def resolve_target(
    key: str, path: Any, kind: type | tuple[type, ...], example: str = "torch.optim.AdamW"
) -> Callable[..., Any]:
    """The class (a subclass of `kind`) or function `path` names, imported only when it lies in
    ALLOWED_TARGETS by its path and by the module that defines it (so `visionlab.cli.os.system` is
    refused like `os.system`); what a function builds is checked when it is called."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{key}._target_={path!r} must be a dotted path such as {example}")
    if not _allowed(path):
        raise ConfigError(f"{key}._target_={path!r} is not allowed; a target comes from {allowed_text()}")
    try:
        target = _import(path)
    except Exception:
        raise ConfigError(f"{key}._target_={path!r} cannot be imported{_typo_hint(path)}") from None
    defined_in = str(getattr(target, "__module__", "") or "")
    if not (inspect.isclass(target) or inspect.isfunction(target)) or not _allowed(defined_in):
        raise ConfigError(f"{key}._target_={path!r} is not a class or function of {allowed_text()}")
    if inspect.isclass(target) and not issubclass(target, kind):
        raise ConfigError(f"{key}._target_={path!r} is not a {dotted(kind)}")
    return target


def check_arguments(
    key: str, path: str, target: Callable[..., Any], given: Iterable[Any], skip: str = "", unset: bool = False
) -> None:
    """Refuse a key `target` does not take, naming it and the target (and how to unset it: `unset`)."""
    valid = keyword_parameters(target, skip=(skip,) if skip else ())
    if valid is None:
        return
    for name in given:
        if str(name) not in valid:
            message = unknown_key_message(key, str(name), valid, path)
            raise ConfigError(f"{message} (or unset it: {key}.{name}=null)" if unset else message)


def check_installed(key: str, path: str, target: Callable[..., Any]) -> None:
    """Refuse a target whose module (or a base class's) needs an optional package that is missing,
    before any data work instead of when the object is built."""
    classes = inspect.getmro(target) if inspect.isclass(target) else (target,)
    for module in dict.fromkeys(str(getattr(c, "__module__", "")) for c in classes):
        package = OPTIONAL_PACKAGES.get(module)
        if package is not None and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{key}._target_={path} needs the {package} package, which is not installed "
                f"(pip install {package}, or turn it off: {key}=null)"
            )


# ---- classes a config names by path: a task's `lightning_module` and `datamodule` ----------------
def resolve_class(key: str, path: Any, kind: type, example: str) -> type:
    """The class `path` names, a subclass of `kind`; from any importable module (a task may live in a
    package of one's own), so not held to ALLOWED_TARGETS. A path that does not import or names
    something else is one ConfigError line naming `key` and what was expected."""
    expected = f"a dotted path to a subclass of {dotted(kind)}, e.g. {key}: {example}"
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ConfigError(f"{key}={path!r} must be {expected}")
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}={path!r} cannot be imported ({reason}); expected {expected}") from None
    target = getattr(module, name, None)
    if target is None:
        raise ConfigError(
            f"{key}={path!r}: {module_name} has no {name}{_typo_hint(path)}; expected {expected}"
        )
    if not inspect.isclass(target) or not issubclass(target, kind):
        raise ConfigError(f"{key}={path!r} is not a subclass of {dotted(kind)}, e.g. {key}: {example}")
    return target


# ---- entries of object groups: `callbacks.<name>`, `logger.<name>` -------------------------------
def check_entry(key: str, entry: Any, kind: type, example: str) -> Callable[..., Any]:
    """The class of one entry (`_target_` and its keyword arguments), checked without resolving its
    other values (they may refer to the run folder, known only in the run)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{key}={entry!r} must be a mapping with a _target_ (or null to leave it out)")
    if "_target_" not in entry:
        raise ConfigError(f"{key} has no _target_; name the class to build, e.g. {key}._target_={example}")
    path = entry.get("_target_")
    target = resolve_target(key, path, kind, example)
    check_installed(key, path, target)
    check_arguments(key, path, target, [k for k in entry if k != "_target_"])
    return target


def check_entries(group: str, entries: Mapping[str, Any] | None, kind: type, example: str) -> None:
    """Check every non-null entry of `group` (a DictConfig or a dict) before any data work."""
    for name, entry in (entries or {}).items():
        if entry is not None:
            check_entry(f"{group}.{name}", entry, kind, example)


def build_entries(group: str, entries: Mapping[str, Any] | None, kind: type, example: str) -> list[Any]:
    """One object per non-null entry of `group` (resolved plain values), in the order of the config."""
    built: list[Any] = []
    for name, entry in (entries or {}).items():
        if entry is None:
            continue
        key = f"{group}.{name}"
        target = check_entry(key, entry, kind, example)
        kwargs = {str(k): v for k, v in entry.items() if k != "_target_"}
        obj = call(key, target, (), kwargs)
        if not isinstance(obj, kind):
            raise ConfigError(f"{key}._target_={dotted(target)} built no {dotted(kind)}")
        built.append(obj)
    return built


def call(key: str, target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`target(*args, **kwargs)`; a wrong value or a missing package is one ConfigError line."""
    try:
        return target(*args, **kwargs)
    except (TypeError, ValueError, ImportError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{key}: {reason} (keys given: {sorted(kwargs)})") from None
