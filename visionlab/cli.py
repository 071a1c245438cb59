"""Entry-point glue: user mistakes become one line on stderr (exit 2), Hydra's own (an unknown option,
key or override syntax) as well as the project's; a command refused before training leaves no run
folder behind; inside a multirun a failing job is recorded (error line for the sweep summary) and the
other jobs go on.

Kept free of torch and Lightning imports, so a mistaken command line fails in a second or two."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import visionlab
from visionlab.errors import ConfigError, VisionlabError
from visionlab.help import help_text
from visionlab.keys import (
    RENAMED_GROUPS,
    RENAMED_MODEL_KEYS,
    renamed_key_message,
    renamed_model_key_message,
)
from visionlab.schema import unknown_key_message
from visionlab.sweep import record_failure

log = logging.getLogger("visionlab")

#: set in the environment when `main` (not the user) asked Hydra for full errors, so that processes
#: started from this one (DDP ranks, launchers) still print one-line errors
_OWN_FULL_ERROR = "VISIONLAB_HYDRA_FULL_ERROR"
#: files a run folder holds before any training: Hydra's record, the log, the resolved config
_STUB_ENTRIES = (".hydra", "config.yaml")

_task_started = False


def main(hydra_main: Callable[[], Any]) -> None:
    """Run a `@hydra.main` function. Hydra's composition errors (unknown config option or key, an
    override it cannot parse, a required value not given) print one `error:` line on stderr and exit 2,
    like the project's own checks. `HYDRA_FULL_ERROR=1` keeps Hydra's full report. `--help` is
    answered from the config files at once, before Hydra composes anything."""
    if {"--help", "-h"} & set(sys.argv[1:]):
        print(help_text(Path(sys.argv[0]).stem), end="")
        return
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and not os.environ.get(_OWN_FULL_ERROR):
        hydra_main()
        return
    # Hydra re-raises instead of printing its multi-line report; we print one line instead
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OWN_FULL_ERROR] = "1"
    try:
        hydra_main()
    except (CompactHydraException, OmegaConfBaseException) as err:
        if _task_started:  # raised by the project's code: a bug, keep the traceback
            raise
        print(f"error: {hydra_error_message(err)}", file=sys.stderr)
        sys.exit(2)


def hydra_error_message(err: BaseException) -> str:
    """One line for a Hydra / OmegaConf error raised while composing the config."""
    recipe = re.fullmatch(r"(\w+)/recipes/(\w+)/(\w+)", str(getattr(err, "missing_cfg_file", "") or ""))
    if isinstance(err, MissingConfigException) and recipe:
        return recipe_message(*recipe.groups())
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        options = sorted(str(o) for o in err.options)
        match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        guess = f"did you mean {group}={match[0]}? " if match else ""
        return f"{group}={name} is not a config option; {guess}the {group} options are {', '.join(options)}"
    if isinstance(err, OverrideParseException):
        reason = _lines(str(err))[-1] if _lines(str(err)) else "syntax error"
        return f"cannot parse the override {err.override!r}: {reason} (key=value; quote values with spaces or brackets)"
    cause = err.__cause__
    parent = getattr(cause, "parent_node", None)
    key = getattr(cause, "key", None)
    full_key = getattr(cause, "full_key", None)
    if str(err).startswith("Could not override") and full_key and key is not None:
        prefix, _, _ = str(full_key).rpartition(".")
        old_form = re.search(rf"use \+{re.escape(str(full_key))}=(\S+)", str(err))
        if prefix in RENAMED_GROUPS and key == "name" and old_form:
            return renamed_key_message(str(full_key), old_form.group(1))
        if prefix == "model" and str(key) in RENAMED_MODEL_KEYS:
            value = old_form.group(1) if old_form else None
            return renamed_model_key_message(str(key), value, has_value=old_form is not None)
        siblings = [str(k) for k in parent] if hasattr(parent, "keys") else []
        added = re.search(r"use (\+\S+)", str(err))
        if not siblings:
            return f"{full_key} is not a config key"
        message = (
            unknown_key_message(prefix, str(key), siblings, prefix)
            if prefix
            else (f"{key} is not a config key; expected one of {', '.join(sorted(siblings))}")
        )
        if added and "did you mean" not in message:
            message += f"; to add a new key: {added.group(1)}"
        return message
    lines = _lines(str(err))
    if cause is not None and not isinstance(err, MissingConfigException):
        lines += _lines(str(cause))[:1]
    return "; ".join(lines) or type(err).__name__


def recipe_message(group: str, task: str, name: str) -> str:
    """`augment=<name> is not an option for task=<task>; ...` with the options that task has."""
    conf = Path(__file__).resolve().parents[1] / "conf" / group / "recipes" / task
    options = sorted(p.stem for p in conf.glob("*.yaml"))
    return f"{group}={name} is not an option for task={task}; the {task} {group} options are {', '.join(options)}"


def _lines(text: str) -> list[str]:
    """The meaningful lines of a Hydra message (without its search path and documentation links)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Config search path") or line.startswith("provider="):
            break
        if (
            line
            and not line.startswith("See https://")
            and not line.startswith("full_key:")
            and not line.startswith("object_type=")
        ):
            out.append(line)
    return out


def in_multirun() -> bool:
    """True inside a job of `python train.py -m ...`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_entry(fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Call `fn(cfg)`. A VisionlabError prints `error: <message>` once and exits 2 (the run folder is
    removed when nothing but its config and log had been written); in a multirun any exception marks
    the job failed instead of stopping the sweep, and returns the worst possible objective (-inf when
    maximising) so a sweeper such as Optuna records it and goes on."""
    global _task_started
    _task_started = True
    try:
        check_required(cfg)
        return fn(cfg)
    except Exception as err:
        if in_multirun():
            log.exception("job failed: %s", err)
            record_failure(Path(HydraConfig.get().runtime.output_dir), err)
            maximise = str(cfg.get("monitor", {}).get("mode", "max")) == "max"
            return float("-inf") if maximise else float("inf")
        if isinstance(err, VisionlabError):
            log_to_files(logging.ERROR, f"error: {err}")
            discard_stub_run_dir()
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise


def check_required(cfg: DictConfig) -> None:
    """Refuse a config whose required values (`???`) were not given, naming them."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return
    if missing == ["ckpt_path"]:
        example = newest_checkpoint(cfg) or "<run folder>/checkpoints/best.ckpt"
        raise ConfigError(
            f"ckpt_path is required: give the checkpoint to evaluate, e.g. "
            f"python evaluate.py task={cfg.get('task_name')} ckpt_path={example}"
        )
    raise ConfigError(
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: give {missing[0]}=..."
    )


def newest_checkpoint(cfg: DictConfig) -> str | None:
    """The newest `best.ckpt` of this task under `paths.output_dir`, if any."""
    try:
        runs = Path(str(cfg.paths.output_dir)).expanduser() / str(cfg.task_name)
        found = sorted(runs.glob("*/checkpoints/best.ckpt"), key=lambda p: p.stat().st_mtime)
    except Exception:
        return None
    return str(found[-1]) if found else None


def file_handlers() -> list[logging.FileHandler]:
    """The log-file handlers Hydra set up for this run (the run folder's `<name>.log`)."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def log_to_files(level: int, message: str, logger: str = "visionlab") -> None:
    """Write `message` to the run's log file only (not the terminal)."""
    record = logging.getLogger(logger).makeRecord(logger, level, __file__, 0, message, None, None)
    for handler in file_handlers():
        if record.levelno >= handler.level:
            handler.handle(record)


def claimed_run_dir() -> Path | None:
    """This process's Hydra run folder when it was created for this run (`${unique_dir:...}`, the
    default `hydra.run.dir`), not one the user named; None otherwise or outside Hydra."""
    if not HydraConfig.initialized() or in_multirun():
        return None
    folder = Path(HydraConfig.get().runtime.output_dir).resolve()
    claimed = {Path(p).resolve() for p in visionlab._claimed.values()}
    return folder if folder in claimed else None


def is_stub(folder: Path) -> bool:
    """Whether `folder` holds nothing but what a run writes before training (config and logs)."""
    return folder.is_dir() and all(p.name in _STUB_ENTRIES or p.suffix == ".log" for p in folder.iterdir())


def discard_stub_run_dir(folder: Path | None = None) -> None:
    """Remove this run's folder (or `folder`, one it claimed) if nothing but config and logs is in it."""
    folder = folder or claimed_run_dir()
    if folder is None or not is_stub(folder):
        return
    for handler in file_handlers():
        if Path(handler.baseFilename).resolve().parent == folder:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # outputs/<task>/ when this was its first run


def move_log_to(folder: Path) -> None:
    """Append the run's log to `<folder>/<name>.log` from now on (a resumed run's own folder)."""
    root = logging.getLogger()
    for handler in file_handlers():
        target = folder / Path(handler.baseFilename).name
        if Path(handler.baseFilename).resolve() == target.resolve():
            continue
        moved = logging.FileHandler(target, mode="a", encoding=handler.encoding)
        moved.setLevel(handler.level)
        moved.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            moved.addFilter(log_filter)
        handler.close()
        root.removeHandler(handler)
        root.addHandler(moved)
