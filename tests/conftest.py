"""Shared test helpers: compose the real configs with tiny data and a temporary run folder."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose `conf/<name>.yaml` with `overrides`, as the command line would."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


#: two quiet CPU epochs: the trainer settings of every tiny test run
QUIET_CPU = [
    "trainer=cpu",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]

#: a finetune run small enough for 2 CPU cores: 12 classes x (6, 3, 3) images of 32 px
TINY_FINETUNE = [
    "task=finetune",
    "data.image_size=32",
    "data.synthetic.image_size=32",
    "data.synthetic.per_class={train: 6, val: 3, test: 3}",
    "data.batch_size=24",
    "data.num_workers=0",
    *QUIET_CPU,
]


def assert_scalar_tags(events: EventAccumulator, *tags: str) -> set[str]:
    """Assert every tag is a scalar series of `events` (naming the missing one); returns all scalar tags."""
    scalars = set(events.Tags()["scalars"])
    for tag in tags:
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    return scalars


def read_events(folder: Path) -> EventAccumulator:
    """Every scalar, image and tensor event TensorBoard would show for the run's `folder`."""
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir per test session, so embedded sets are generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """`make_cfg(*overrides, name="train", run="run")` -> config writing into tmp_path/run."""

    def make(
        *overrides: str, name: str = "train", run: str = "run", base: list[str] | None = None
    ) -> DictConfig:
        base = TINY_FINETUNE if base is None else base
        return compose_config(
            name, [*base, f"paths.data_dir={data_dir}", f"paths.run_dir={tmp_path / run}", *overrides]
        )

    return make


def hparams_scalars(run: Path) -> set[str]:
    """The metric tags of the run's HPARAMS session (`tensorboard/hparams/`), read with EventAccumulator;
    the session's hparams are there and no experiment summary (which would hide other tasks' columns)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard" / "hparams"), size_guidance={"scalars": 0})
    acc.Reload()
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" not in plugin
    return set(acc.Tags()["scalars"])


def assert_curves_only(acc: Any) -> None:
    """SCALARS of a run of two epochs or more (an EventAccumulator read with scalars: 0) hold curves only:
    no one-point card (test values, final/*, epoch), those are in metrics.json and HPARAMS."""
    tags = acc.Tags()["scalars"]
    one_point = [t for t in tags if len(acc.Scalars(t)) < 2]
    assert not one_point and not any(t.startswith(("test/", "final/")) for t in tags), one_point
    with contextlib.suppress(KeyError):  # KeyError: no hparams summary at all, as it should be
        assert not acc.PluginTagToContent("hparams"), "the curves' run is no HPARAMS session"


def with_old_model_keys(src: Path, dst: Path, old: dict[str, Any], drop: tuple[str, ...] = ()) -> Path:
    """Copy checkpoint `src` to `dst` with its saved `model` hyperparameters in the form written before
    the keys were renamed: the `drop` keys removed and `old` added (e.g. {"encoder": "resnet18"})."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    model = {k: v for k, v in state["hyper_parameters"]["model"].items() if k not in drop}
    state["hyper_parameters"]["model"] = {**model, **old}
    torch.save(state, dst)
    return dst
