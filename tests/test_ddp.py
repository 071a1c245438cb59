"""Data-parallel training on 2 CPU processes (gloo): metrics are reduced across ranks and only
rank 0 writes the run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_FINETUNE, compose_config
from visionlab.runner import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_reduces_metrics_and_only_rank_zero_writes(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp_run"
    args = [a for a in TINY_FINETUNE if not a.startswith("trainer=")]
    cmd = [
        sys.executable,
        "train.py",
        *args,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((run / "tensorboard").glob("events.*"))) >= 1
    # one of each file (rank 0 writes them; tables.json is the run report's tables)
    assert sorted(p.name for p in run.iterdir() if p.suffix == ".json") == [
        "job.json",
        "metrics.json",
        "tables.json",
    ]
    trained = json.loads((run / "metrics.json").read_text())

    # Each rank tested half of the 36 test images; the reduced accuracy equals one process on all.
    cfg = compose_config(
        "evaluate",
        [
            *TINY_FINETUNE,
            f"paths.data_dir={data_dir}",
            f"paths.run_dir={tmp_path / 'eval'}",
            f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
        ],
    )
    assert evaluate(cfg)["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
