"""The resolved settings of a run that differ from its task's defaults: the run's config.yaml against
`train.yaml` (or `evaluate.yaml`) composed with only `task=<name>`, through Hydra's compose API."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: top-level keys that name places or Hydra's own settings, not choices of the experiment
SKIPPED = ("paths", "hydra")
NOT_SET = "(not set)"
#: a default that names a place of the run (`${paths.run_dir}/checkpoints`): never a difference
PLACE = "(a path of the run)"


def project_conf_dir() -> Path:
    """The `conf/` folder beside the package (an editable install or a checkout)."""
    return Path(__file__).resolve().parents[2] / "conf"


def task_defaults(
    task: str, kind: str, conf_dir: Path | None = None, searchpath: Sequence[str] = ()
) -> dict[str, Any]:
    """The flattened default config of `task` for `kind` (train or evaluate). Inside a running Hydra
    app its own search path is used; otherwise `conf_dir` (default: the project's conf/). `searchpath`
    is the run's `hydra.searchpath` (where a task of one's own has its config)."""
    from hydra import compose, initialize_config_dir  # lazy for speed: only to compose the defaults
    from hydra.core.global_hydra import GlobalHydra

    name, overrides = ("evaluate" if kind == "evaluate" else "train"), [f"task={task}"]
    if searchpath:
        overrides.append("hydra.searchpath=[" + ",".join(f"'{p}'" for p in searchpath) + "]")
    if GlobalHydra.instance().is_initialized():
        return flatten(compose(name, overrides=overrides))
    with initialize_config_dir(config_dir=str(conf_dir or project_conf_dir()), version_base="1.3"):
        return flatten(compose(name, overrides=overrides))


def flatten(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """`a.b.c` -> value for every leaf outside SKIPPED; interpolations resolved where they can be."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for child, sub in value.items():
                walk(sub, f"{key}.{child}" if key else str(child))
            return
        if isinstance(value, str) and ("${paths." in value or "${hydra:" in value):
            out[key] = PLACE
            return
        if isinstance(value, str) and "${" in value:
            try:
                resolved = OmegaConf.select(node, key, throw_on_resolution_failure=True)
                value = (
                    OmegaConf.to_container(resolved, resolve=True)
                    if OmegaConf.is_config(resolved)
                    else resolved
                )
            except Exception:
                pass  # an expression that cannot be resolved here: keep it as written
            if isinstance(value, dict) and value:
                walk(value, key)
                return
        out[key] = value

    tree = OmegaConf.to_container(node, resolve=False)
    for top, value in tree.items():
        if top not in SKIPPED:
            walk(value, str(top))
    return out


def changed_settings(run: dict[str, Any], defaults: dict[str, Any]) -> list[list[str]]:
    """[key, default, this run] for every leaf whose value differs, as display text, sorted by key."""
    mine = flatten(run)
    rows = []
    for key in sorted(set(mine) | set(defaults)):
        a, b = defaults.get(key, NOT_SET), mine.get(key, NOT_SET)
        if a != b and PLACE not in (a, b) and not _under_place(key, defaults):
            rows.append([key, show(a), show(b)])
    return rows


def _under_place(key: str, defaults: dict[str, Any]) -> bool:
    """Whether a parent of `key` is a run path in the defaults (a whole node set from paths.*)."""
    parts = key.split(".")
    return any(defaults.get(".".join(parts[:i])) == PLACE for i in range(1, len(parts)))


def show(value: Any) -> str:
    """A setting as one line: YAML-like scalars, JSON for lists and mappings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if value == "???":
        return "(required)"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)
