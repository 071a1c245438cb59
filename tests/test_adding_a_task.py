"""docs/adding-a-task.md holds: a sixth task whose files all live outside the project (tests/sixth_task/:
its module, data and config) trains through train.py and is evaluated through evaluate.py, and a wrong
class path in its config is one error line before any data work."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.test_cli import assert_one_error_line, run_cli

ROOT = Path(__file__).resolve().parents[1]
SIXTH = ROOT / "tests" / "sixth_task"
#: what the doc tells a user to add to the command line for a task config outside conf/
SEARCHPATH = f"hydra.searchpath=[file://{SIXTH / 'conf'}]"
QUICK = ["trainer=cpu", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


def run_sixth(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python <script> task=sixth hydra.searchpath=[...] <args>`, its package on PYTHONPATH as a user's own."""
    env = {**os.environ, "PYTHONPATH": str(SIXTH)}
    return run_cli(script, "task=sixth", SEARCHPATH, *QUICK, *args, tmp_path=tmp_path, env=env)


def test_the_sixth_task_is_nowhere_in_the_project() -> None:
    from visionlab.keys import tasks_available

    assert "sixth" not in tasks_available()
    for folder in ("conf", "tasks", "datamodules"):
        assert not [p for p in (ROOT / folder).rglob("*") if "sixth" in p.name], folder


def test_a_task_of_ones_own_trains_and_evaluates(tmp_path: Path) -> None:
    trained = run_sixth(
        "train.py", "trainer.max_epochs=1", "trainer.limit_train_batches=1", tmp_path=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "sixth").iterdir()
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file()
    assert torch.load(best, map_location="cpu", weights_only=True)["task_name"] == "sixth"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # the commands a user reads back name the config folder, without which they would not run
    assert f"python evaluate.py task=sixth '{SEARCHPATH}' ckpt_path={best}" in trained.stdout
    assert SEARCHPATH in json.loads((run / "tables.json").read_text())["command"]

    evaluated = run_sixth("evaluate.py", f"ckpt_path={best}", tmp_path=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (folder,) = [p for p in (tmp_path / "outputs" / "sixth").iterdir() if p != run]
    again = json.loads((folder / "metrics.json").read_text())
    assert again["test/acc"] == pytest.approx(metrics["test/acc"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "lightning_module=sixth.SixthTsk",
            ["lightning_module='sixth.SixthTsk'", "did you mean sixth.SixthTask?"],
        ),
        ("datamodule=nowhere.Data", ["datamodule='nowhere.Data' cannot be imported", "LightningDataModule"]),
        (
            "datamodule=sixth.SixthTask",
            ["datamodule='sixth.SixthTask' is not a subclass of", "LightningDataModule"],
        ),
    ],
)
def test_a_wrong_class_path_is_one_line_before_data_work(
    tmp_path: Path, override: str, expected: list[str]
) -> None:
    result = run_sixth("train.py", override, tmp_path=tmp_path)
    assert_one_error_line(result, *expected)
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "outputs" / "sixth").exists()  # no run folder left behind
