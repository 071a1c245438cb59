"""Read what a run folder holds (config.yaml, metrics.json, tables.json, .hydra/, TensorBoard events
or the CSV logger's metrics.csv, figures), so a report is made from the folder alone, without torch."""

from __future__ import annotations

import bisect
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionlab.errors import DataError

#: the file the run writes for its report: command, machine, settings that differ, the task's tables
TABLES_FILE = "tables.json"
#: what a multirun folder holds that a run folder does not
SWEEP_MARKERS = ("summary.csv", "multirun.yaml")

Series = list[tuple[int, float]]


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, {} when the file is missing or unreadable (a report shows what it can)."""
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_yaml(path: Path) -> Any:
    """Plain containers from a YAML file (unresolved), None when missing or unreadable."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else None
    except Exception:
        return None


def is_sweep(folder: Path) -> bool:
    """A multirun folder: Hydra's multirun.yaml or the sweep's summary.csv, and no config.yaml of its own."""
    return not (folder / "config.yaml").is_file() and any((folder / m).is_file() for m in SWEEP_MARKERS)


def is_run(folder: Path) -> bool:
    """A train.py or evaluate.py run folder (it has the resolved config.yaml)."""
    return (folder / "config.yaml").is_file()


@dataclass
class Run:
    """One run folder and everything read from it; TensorBoard events are read on first use."""

    folder: Path
    config: dict[str, Any]
    metrics: dict[str, float]
    info: dict[str, Any]
    hydra: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    overrides_file: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return str(self.config.get("task_name") or self.info.get("task") or "unknown")

    @property
    def kind(self) -> str:
        """`train` or `evaluate` (which entry point made the folder)."""
        kind = self.info.get("kind") or (self.hydra.get("job") or {}).get("name")
        if kind in ("train", "evaluate"):
            return str(kind)
        return "evaluate" if "split" in self.config else "train"

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def overrides(self) -> list[str]:
        """The command line's overrides (key=value), as Hydra recorded them."""
        return list(self.info.get("overrides") or self.overrides_file or self.job.get("overrides") or [])

    @property
    def command(self) -> str:
        """The command that made the run, or a note when it was started from Python."""
        if self.info.get("command"):
            return str(self.info["command"])
        if self.hydra:
            return " ".join(["python", f"{self.kind}.py", *self.overrides])
        if self.info:
            return f"{self.kind}(cfg) called from Python (no command line)"
        return "not recorded (the folder has neither tables.json nor .hydra/)"

    @property
    def tables(self) -> dict[str, Any]:
        """The task's own tables the run wrote (confusion matrices, curves, symbol tables)."""
        return dict(self.info.get("tables") or {})

    @property
    def monitor(self) -> str:
        return str((self.config.get("monitor") or {}).get("metric") or "val/loss")

    @property
    def monitor_mode(self) -> str:
        return str((self.config.get("monitor") or {}).get("mode") or "min")

    @property
    def train_seconds(self) -> float | None:
        value = self.metrics.get("time/train_s")
        return float(value) if isinstance(value, (int, float)) else None

    def headline(self) -> list[str]:
        """The task's summary metrics, the best monitored value and its test counterpart, in that order."""
        summary = self.info.get("headline") or [
            k for k in self.metrics if k.startswith("test/") and k.count("/") == 1
        ]
        keys = [*summary, f"best/{self.monitor}", self.monitor.replace("val/", "test/", 1)]
        if self.kind == "evaluate":
            keys.append(self.monitor)
        return [k for k in dict.fromkeys(keys) if k in self.metrics]

    # ---- files and TensorBoard ----------------------------------------------------------------
    def file(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.is_file() else None

    def image(self, *sources: str) -> bytes | None:
        """The first PNG found among `sources`: file names in the run folder (evaluate.py writes them)
        or TensorBoard image tags (a figure's last step)."""
        for source in sources:
            data = self.file(source) if source.endswith(".png") else self.events.images.get(source)
            if data:
                return data
        return None

    def images_under(self, prefix: str) -> dict[str, bytes]:
        """TensorBoard images whose tag starts with `prefix` (e.g. test/examples/), by tag."""
        return {tag: png for tag, png in sorted(self.events.images.items()) if tag.startswith(prefix)}

    @cached_property
    def events(self) -> Events:
        return read_events(self.folder)

    def curve(self, tag: str) -> list[tuple[int, float]]:
        """(epoch, value) of a per-epoch scalar (epochs from 1)."""
        return self.events.per_epoch(tag)


@dataclass
class Events:
    """Scalars (tag -> [(step, value)]) and the last image of each image tag."""

    scalars: dict[str, Series] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    #: steps at which each training epoch ended (to turn steps into epochs)
    epoch_steps: list[int] = field(default_factory=list)
    #: (epoch, value) pairs read from the CSV logger, where the epoch is recorded with each row
    csv_epochs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def per_epoch(self, tag: str) -> list[tuple[int, float]]:
        if tag in self.csv_epochs:
            return self.csv_epochs[tag]
        series = self.scalars.get(tag, [])
        if not self.epoch_steps:
            return [(i + 1, v) for i, (_, v) in enumerate(series)]
        return [(bisect.bisect_left(self.epoch_steps, step) + 1, v) for step, v in series]

    def tags(self) -> list[str]:
        return sorted({*self.scalars, *self.csv_epochs})


def read_events(folder: Path) -> Events:
    """The run's TensorBoard events (`tensorboard/`), else the CSV logger's `csv/metrics.csv`."""
    tb_dir = folder / "tensorboard"
    if tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        return _read_tensorboard(tb_dir)
    csv_file = folder / "csv" / "metrics.csv"
    if csv_file.is_file():
        return _read_csv(csv_file)
    return Events()


def _read_tensorboard(tb_dir: Path) -> Events:
    # lazy for speed: tensorboard is loaded only for a run with event files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    guidance = {
        "images": 1,
        "scalars": 0,
        "tensors": 1,
        "histograms": 1,
        "audio": 1,
        "compressedHistograms": 1,
    }
    acc = EventAccumulator(str(tb_dir), size_guidance=guidance)
    quiet = logging.getLogger("tensorboard")  # its directory watcher logs every file it moves to
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        acc.Reload()
    finally:
        quiet.setLevel(level)
    tags = acc.Tags()
    scalars: dict[str, Series] = {}
    for tag in tags.get("scalars", []):
        if tag.startswith("final/"):
            continue
        by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}  # a resume's repeat wins
        scalars[tag] = sorted(by_step.items())
    images = {tag: acc.Images(tag)[-1].encoded_image_string for tag in tags.get("images", [])}
    reference = next((t for t in ("time/epoch_s", "train/loss") if t in scalars), None)
    steps = [s for s, _ in scalars[reference]] if reference else []
    return Events(scalars=scalars, images=images, epoch_steps=steps)


def _read_csv(path: Path) -> Events:
    per_tag: dict[str, dict[int, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row.get("epoch") or "nan")) + 1
            except ValueError:
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in (None, ""):
                    continue
                number = float(value)
                if math.isfinite(number):
                    per_tag.setdefault(key, {})[epoch] = number
    return Events(csv_epochs={tag: sorted(values.items()) for tag, values in per_tag.items()})


def load_run(folder: Path | str) -> Run:
    """Read a run folder; a folder that is not one is a DataError naming what it lacks."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; give a run folder of train.py or evaluate.py")
    if not is_run(folder):
        raise DataError(
            f"{folder} is not a run folder (no config.yaml); give a folder under outputs/<task>/ "
            "or a multirun folder"
        )
    metrics = {k: float(v) for k, v in load_json(folder / "metrics.json").items() if _number(v)}
    return Run(
        folder=folder,
        config=load_yaml(folder / "config.yaml") or {},
        metrics=metrics,
        info=load_json(folder / TABLES_FILE),
        hydra=(load_yaml(folder / ".hydra" / "hydra.yaml") or {}).get("hydra") or {},
        job=load_json(folder / "job.json"),
        overrides_file=[str(o) for o in load_yaml(folder / ".hydra" / "overrides.yaml") or []],
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
