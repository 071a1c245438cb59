"""The terminal's progress bar: updated at a fixed rate and on each epoch's last batch, left out unbuilt
with trainer.enable_progress_bar=false, and a bad rate refused by its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import OmegaConf

from tests.conftest import compose_config
from visionlab import progress
from visionlab.callbacks import build_callbacks, shows_progress_bar
from visionlab.errors import ConfigError
from visionlab.progress import SteadyProgressBar


def test_the_bar_updates_at_most_at_its_rate_and_always_on_the_last_batch(monkeypatch) -> None:
    clock = iter([100.0, 100.05, 100.09, 100.11, 100.12, 100.13])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = SteadyProgressBar(updates_per_second=10)
    due = [bar._due(batch_idx, total=6) for batch_idx in range(6)]
    # the first batch, the first after 0.1 s, and the last one (batch 6 of 6) however soon it comes
    assert due == [True, False, False, True, False, True]


def test_the_bar_is_left_out_unbuilt_without_the_progress_bar(tmp_path: Path) -> None:
    cfg = compose_config("train", [f"paths.run_dir={tmp_path}", "trainer.enable_progress_bar=false"])
    specs = OmegaConf.to_container(cfg.callbacks, resolve=True)
    assert not shows_progress_bar(cfg)
    assert not any(isinstance(c, ProgressBar) for c in build_callbacks(specs, shows_progress_bar(cfg)))
    assert any(isinstance(c, SteadyProgressBar) for c in build_callbacks(specs))


def test_a_rate_that_is_not_positive_is_one_line_naming_the_key(tmp_path: Path) -> None:
    cfg = compose_config(
        "train", [f"paths.run_dir={tmp_path}", "callbacks.progress_bar.updates_per_second=0"]
    )
    with pytest.raises(ConfigError, match=r"callbacks.progress_bar.updates_per_second=0 must be a positive"):
        build_callbacks(OmegaConf.to_container(cfg.callbacks, resolve=True))
