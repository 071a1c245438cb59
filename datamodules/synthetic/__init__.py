"""Generators that write the embedded default datasets in the real on-disk formats.

Each generator writes into a folder; `ensure_generated` runs it once into a temporary sibling and
renames it into place, so an interrupted generation never leaves a half-written dataset behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datamodules.synthetic.progress import generating
from visionlab.errors import ConfigError, DataError

MARKER = ".visionlab_complete.json"


def ensure_generated(root: Path, generate: Callable[..., None], **params: Any) -> Path:
    """Return `root`, generating it with `generate(root, **params)` first unless a finished copy exists.

    A finished copy carries a marker file with the parameters; a copy made with other parameters
    is an error rather than silently reused, so a changed size never mixes with an old cache. A lock
    file serialises processes that start at once (parallel sweep jobs): one generates, the others wait
    and reuse it.
    """
    root = Path(root).expanduser().resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_unfinished(root)
        marker = root / MARKER
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved != _jsonable(params):
                raise DataError(
                    f"{root} holds an embedded dataset generated with {saved}, not {_jsonable(params)}; "
                    "delete that folder or point paths.data_dir elsewhere."
                )
            return root
        if root.exists() and any(root.iterdir()):
            raise DataError(
                f"{root} exists but is not a finished embedded dataset (no {MARKER}); "
                "delete it to regenerate, or set data.root to your own data."
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            with generating(root.name, root):
                generate(tmp, **params)
            (tmp / MARKER).write_text(json.dumps(_jsonable(params), indent=1))
            if root.exists():
                root.rmdir()
            tmp.rename(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root


def _remove_unfinished(root: Path) -> None:
    """Remove the temporary siblings (`.<name>.<random>/`) a process killed while generating `root` left;
    called with the set's lock held, so none of them is being written now."""
    for folder in root.parent.glob(f".{root.name}.*"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


LEVELS = ("easy", "hard")


def synthetic_folder(
    data_dir: Path, name: str, synthetic: dict[str, Any], variant: str | None = None
) -> Path:
    """Where an embedded set lives: `<data_dir>/<name>_<level>[_<variant>]_<digest>`, the digest a short
    hash of all of `data.synthetic`, so sets drawn with other parameters (level, count, size, seed,
    classes) never share a folder and one recipe never finds another's set in its way; `variant` (a
    class subset) keeps the name readable. Raises a one-line ConfigError for an unknown
    `data.synthetic.level` (before anything is generated)."""
    level = synthetic.get("level", "hard")
    if level not in LEVELS:
        raise ConfigError(f"data.synthetic.level={level!r}: expected one of {', '.join(LEVELS)}")
    digest = hashlib.sha1(json.dumps(_jsonable(synthetic), sort_keys=True).encode()).hexdigest()[:8]
    return Path(data_dir) / "_".join(part for part in (name, level, variant, digest) if part)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))
