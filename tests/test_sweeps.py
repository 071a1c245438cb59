"""Multirun sweeps: one folder per job, a summary that records failures, Optuna search that resumes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from visionlab.sweep import main as rebuild_summary

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=finetune",
    "data.image_size=32",
    "data.synthetic.image_size=32",
    "data.synthetic.per_class={train: 6, val: 3, test: 3}",
    "data.num_workers=0",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "run_test=false",
]


def run_train(*args: str, data_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    keys = {a.split("=", 1)[0] for a in args}
    cmd = [
        sys.executable,
        "train.py",
        *args,
        *(t for t in TINY if t.split("=", 1)[0] not in keys),
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def test_multirun_writes_a_folder_per_job_and_records_the_failed_one(data_dir: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        "data.batch_size=24,48",
        "model.arch=resnet18,lenet",
        f"hydra.sweep.dir={sweep}",
        data_dir=data_dir,
        tmp_path=tmp_path,
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"]
    rows = read_summary(sweep)
    assert [r["status"] for r in rows] == ["completed", "failed", "completed", "failed"]
    assert [r["data.batch_size"] for r in rows] == ["24", "24", "48", "48"]
    assert "model.arch='lenet' is not a finetune model" in rows[1]["error"]
    assert all(float(r["val/acc"]) >= 0 for r in rows if r["status"] == "completed")
    assert all(float(r["wall_s"]) > 0 for r in rows)
    assert (sweep / "plot_data.batch_size.png").is_file()
    for job in ("0", "2"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert any((sweep / job / "tensorboard").glob("events.*"))

    # an interrupted sweep: a job folder without its record is reported, and the summary rebuilt
    (sweep / "2" / "job.json").unlink()
    (sweep / "2" / "metrics.json").unlink()
    (sweep / "summary.csv").unlink()
    rebuild_summary([str(sweep), "--metric", "val/acc"])
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "failed", "incomplete", "failed"]


def test_optuna_search_runs_and_resumes_from_its_storage(data_dir: Path, tmp_path: Path) -> None:
    import optuna

    search = ["hparams_search=finetune_optuna"]
    run_train(*search, "hydra.sweeper.n_trials=2", data_dir=data_dir, tmp_path=tmp_path)
    storage = f"sqlite:///{tmp_path / 'out' / 'optuna' / 'finetune.db'}"
    assert len(optuna.load_study(study_name="finetune", storage=storage).trials) == 2
    run_train(*search, "hydra.sweeper.n_trials=1", data_dir=data_dir, tmp_path=tmp_path)
    trials = optuna.load_study(study_name="finetune", storage=storage).trials
    assert len(trials) == 3
    assert all(t.value is not None for t in trials)
