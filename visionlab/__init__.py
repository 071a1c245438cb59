"""visionlab: the framework core (runner, callbacks, figures, sweeps) shared by all tasks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from visionlab.help import help_text

_claimed: dict[str, str] = {}


def _mkdir(path: str) -> str:
    """`${mkdir:<path>}` in a config: create the folder (e.g. for an SQLite study) and return its path."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path


def _unique_dir(path: str) -> str:
    """`${unique_dir:<path>}`: claim `<path>` (or `<path>_2`, `_3`, ... when taken) by creating it, so
    two runs started in the same second never share a folder. Stable within one process."""
    if path in _claimed:
        return _claimed[path]
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")
    _claimed[path] = str(candidate)
    return _claimed[path]


def _help(entry: str = "train") -> str:
    """`${visionlab_help:<entry>}`: the `--help` page (Hydra's help template), `$` escaped for it."""
    return help_text(entry).replace("$", "$$")


for _name, _fn in (("mkdir", _mkdir), ("unique_dir", _unique_dir), ("visionlab_help", _help)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
