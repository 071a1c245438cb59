"""The terminal's progress bar: updated at a fixed rate and on each epoch's last batch, left out unbuilt
with trainer.enable_progress_bar=false, and a bad rate refused by its key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import compose_config
from visionlab import progress
from visionlab.callbacks import build_callbacks, run_callbacks
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
    assert not any(isinstance(c, ProgressBar) for c in run_callbacks(cfg))
    assert any(isinstance(c, SteadyProgressBar) for c in build_callbacks(specs))


def test_without_rich_the_rich_bar_gives_way_to_lightnings_default(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real_find_spec(name, *a)
    )
    cfg = compose_config("train", [f"paths.run_dir={tmp_path}"])
    assert not any(isinstance(c, ProgressBar) for c in run_callbacks(cfg))
    assert "callbacks.progress_bar: rich is not installed" in caplog.text


def test_a_rate_that_is_not_positive_is_one_line_naming_the_key(tmp_path: Path) -> None:
    cfg = compose_config(
        "train", [f"paths.run_dir={tmp_path}", "callbacks.progress_bar.updates_per_second=0"]
    )
    with pytest.raises(ConfigError, match=r"callbacks.progress_bar.updates_per_second=0 must be a positive"):
        build_callbacks(OmegaConf.to_container(cfg.callbacks, resolve=True))


class _Tiny(pl.LightningModule):
    """Seven training batches of a linear layer, enough to drive the bar."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(14, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_fit_within_one_interval_updates_the_bar_on_its_first_and_last_batch(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(progress.time, "monotonic", lambda: 5.0)  # every batch within the first 0.1 s
    bar = SteadyProgressBar(updates_per_second=10)
    shown: list[int] = []
    update = bar._update
    monkeypatch.setattr(
        bar, "_update", lambda task, current, *a, **k: (shown.append(current), update(task, current, *a, **k))
    )
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(_Tiny())
    assert shown == [1, 7]  # the first batch, then the finished bar, exact
