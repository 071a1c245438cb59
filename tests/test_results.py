"""`python -m benchmarks.results` on tiny settings: it runs each recipe as `python train.py` jobs (pose
stage 1, then stage 2 chained on its best.ckpt; embed), writes results.json and results.md with every
bar's value, bar and result, and reports a missing metric or a missing tier-cpu experiment file instead
of crashing. A measurement, not a timed test: nothing here asserts on a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import results
from benchmarks.results import main
from benchmarks.results_plan import plan_jobs, split_overrides
from benchmarks.results_spec import Bar, evaluate_bar

#: every job: the CPU trainer, one epoch, no progress bar; the CSV logger (no TensorBoard figures) to
#: keep the jobs short
TINY = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "data.num_workers=0",
    "logger=csv",
]
#: 48 drawn people at 64 px and an eighth-width network (as tests/test_pose.py), 400 digits (as
#: tests/test_embed.py); the embedded Greek letters are the embed task's default
PER_TASK = [
    "pose:data.image_size=64",
    "pose:model.width=0.125",
    "pose:data.synthetic.num_images=48",
    "pose:data.train_count=24",
    "pose:data.val_fraction=0.25",
    "pose:data.batch_size=8",
    "pose_stage2:trainer.limit_train_batches=1.0",  # a quarter of 3 batches is none
    "embed:data.synthetic={num_train: 400, num_test: 100, seed: 0}",
    "embed:data.batch_size=32",
    "embed:optimizer=adam",
    "embed:optimizer.momentum=null",  # the task's SGD momentum
    "embed:optimizer.lr=0.003",
]
#: a bar on a key no task writes: it must come out as "missing", not as an error
NOT_WRITTEN = Bar("a metric no task writes", "test/not_written", 0.5)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    """One tier-default run of pose and embed on tiny settings, with one extra bar on a missing key."""
    out = tmp_path_factory.mktemp("results")
    data = tmp_path_factory.mktemp("results_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(results.BARS["default"], "embed", (*results.BARS["default"]["embed"], NOT_WRITTEN))
        code = main(
            ["--tasks", "pose", "embed", "--out", str(out), f"paths.data_dir={data}", *TINY, *PER_TASK]
        )
    return code, out


def test_results_json_has_every_bar_with_value_bar_and_result(ran: tuple[int, Path]) -> None:
    code, out = ran
    report = json.loads((out / "results.json").read_text())
    assert code == report["exit_status"] == 1  # tiny runs miss the bars, and one metric is missing
    assert report["tier"] == "default" and report["date"]
    assert {"cpu", "cores", "torch_num_threads"} <= set(report["machine"])
    assert {"python", "torch", "lightning"} <= set(report["versions"])
    assert "commit" in report["git"] and len(report["load_before"]) == len(report["load_after"]) == 3
    assert set(report["tasks"]) == {"pose", "embed"}

    pose = report["tasks"]["pose"]
    assert [j["name"] for j in pose["jobs"]] == ["pose", "pose_stage2"]
    assert all(j["status"] == "ok" and j["wall_s"] > 0 and j["returncode"] == 0 for j in pose["jobs"])
    stage1, stage2 = pose["jobs"]
    assert stage1["train_s"] is not None and Path(stage1["metrics_file"]).is_file()
    assert stage2["recipe"][:2] == ["task=pose", "stage=2"]
    assert stage2["recipe"][2] == f"prev_ckpt={stage1['run_dir']}/checkpoints/best.ckpt"
    assert pose["recipe"][0] == "python train.py task=pose"
    rows = {b["key"]: b for b in pose["bars"]}
    pcp = rows["test/pcp/mean"]
    assert 0.0 <= pcp["value"] <= 1.0 and pcp["bar"] == ">= 0.35" and pcp["result"] in ("pass", "fail")
    assert pcp["references"][0]["value"] == 0.61
    gain = rows["test/stage2/pcp/mean"]  # stage 2 minus stage 1, read from the stage-2 run
    assert gain["minus"] == "test/stage1/pcp/mean" and gain["job"] == "stage2"
    assert isinstance(gain["value"], float) and gain["result"] == "info"

    embed = report["tasks"]["embed"]
    assert embed["status"] == "fail"
    rows = {b["key"]: b for b in embed["bars"]}
    assert rows["test/acc"]["result"] in ("pass", "fail") and 0.0 <= rows["test/acc"]["value"] <= 1.0
    assert rows["test/symbols/loo_1nn_acc"]["result"] in ("pass", "fail")
    missing = rows["test/not_written"]
    assert missing["result"] == "missing" and missing["value"] is None
    assert "test/not_written not in metrics.json" in missing["why"]
    assert "a metric no task writes: missing" in embed["message"]


def test_results_md_has_the_tables_and_the_run_folders_exist(ran: tuple[int, Path]) -> None:
    _, out = ran
    text = (out / "results.md").read_text()
    for heading in ("## Summary", "## Bars", "## Jobs", "## References (measured on the real datasets)"):
        assert heading in text
    assert "| pose | stage 1: test PCP mean (arms + legs) | `test/pcp/mean` |" in text
    assert "`test/stage2/pcp/mean - test/stage1/pcp/mean`" in text
    assert "| `test/not_written` | - | >= 0.5 | missing" in text
    assert "measured on the real dataset" in text and "Toshev & Szegedy" in text
    assert "python train.py task=pose stage=2 prev_ckpt=" in text
    for job in ("pose", "pose_stage2", "embed"):
        assert (out / "runs" / "default" / job / "metrics.json").is_file()
        assert (out / "logs" / f"default_{job}.log").is_file()


def test_a_missing_cpu_experiment_is_reported_and_the_other_tasks_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "experiment").mkdir()
    monkeypatch.setattr(results, "EXPERIMENT_DIR", tmp_path / "experiment")
    code = main(["--tier", "cpu", "--tasks", "pose", "defect", "--out", str(tmp_path / "out")])
    assert code == 1
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    for task in ("pose", "defect"):
        entry = report["tasks"][task]
        assert entry["status"] == "missing_experiment"
        assert f"conf/experiment/{task}_cpu.yaml does not exist" in entry["message"]
        assert all(b["result"] == "not run" for b in entry["bars"])
        assert all(j["status"] == "skipped" for j in entry["jobs"])
    assert report["tasks"]["pose"]["recipe"][1] == (
        "python train.py experiment=pose_cpu stage=2 'prev_ckpt=<stage-1 best.ckpt>' trainer.max_epochs=4 "
        "trainer.limit_train_batches=0.5"
    )
    assert "missing_experiment" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["--tasks", "pose", "bogus"],
        ["--tier", "gpu"],
        ["not_an_override"],
        ["--set", "nope:a=1"],
        ["task=pose"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_an_out_folder_holding_these_runs_is_refused(tmp_path: Path) -> None:
    (tmp_path / "runs" / "default" / "embed").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "embed" / "metrics.json").write_text("{}")
    assert main(["--tasks", "embed", "--out", str(tmp_path)]) == 2


def test_task_and_stage_prefixed_overrides_reach_their_jobs_only(tmp_path: Path) -> None:
    common, scoped = split_overrides(["a=1", "pose:b=2", "pose_stage2:c=3", "embed:d=4"])
    stage1, stage2 = plan_jobs("pose", "cpu", tmp_path, common, scoped)
    assert stage1.overrides == ["a=1", "b=2"] and stage2.overrides == ["a=1", "b=2", "c=3"]
    assert stage1.recipe == ["experiment=pose_cpu"]
    assert plan_jobs("embed", "default", tmp_path, common, scoped)[0].overrides == ["a=1", "d=4"]


def test_bar_values_gains_missing_and_non_finite() -> None:
    gain = Bar("gain", "test/stage2/x", 0.03, job="stage2", minus="test/stage1/x")
    assert evaluate_bar(gain, {"test/stage2/x": 0.5, "test/stage1/x": 0.4})["result"] == "pass"
    assert evaluate_bar(gain, {"test/stage2/x": 0.41, "test/stage1/x": 0.4})["result"] == "fail"
    assert evaluate_bar(gain, {"test/stage2/x": 0.5})["result"] == "missing"
    plain = Bar("acc", "test/acc", 0.9)
    assert evaluate_bar(plain, {"test/acc": float("nan")})["result"] == "fail"
    assert evaluate_bar(plain, {"test/acc": "0.95"})["result"] == "missing"  # not a number
    assert evaluate_bar(plain, None)["result"] == "not run"
    assert evaluate_bar(Bar("info", "test/acc", None), {"test/acc": 0.1})["result"] == "info"


def test_the_transfer_study_runs_only_when_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert "finetune_transfer" not in results.resolve_tasks(None)[0]
    pretrain, transfer, scratch = plan_jobs("finetune_transfer", "default", tmp_path, [], {})
    assert pretrain.recipe == ["experiment=finetune_pretrain"]
    assert transfer.recipe == ["experiment=finetune_transfer", "model.weights=<pretrain best.ckpt>"]
    assert scratch.recipe == ["experiment=finetune_transfer", "model.weights=null"]
    assert main(["--tasks", "finetune_transfer", "--dry-run", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "python train.py experiment=finetune_transfer model.weights=null hydra.run.dir=" in printed
    assert "test/acc (transfer) - test/acc (scratch) >= 0.2" in printed


def test_the_transfer_gain_is_read_from_two_runs(tmp_path: Path) -> None:
    result = results.TaskResult(
        "finetune_transfer", jobs=plan_jobs("finetune_transfer", "cpu", tmp_path, [], {})
    )
    for job, acc in zip(result.jobs, (0.9, 0.8, 0.5), strict=True):
        job.status, job.metrics_file = "ok", str(tmp_path / f"{job.name}.json")
        Path(job.metrics_file).write_text(json.dumps({"test/acc": acc}))
    results.judge_task(result, "cpu")
    gain = result.bars[-1]
    assert (gain["job"], gain["minus_job"]) == ("transfer", "scratch")
    assert gain["value"] == pytest.approx(0.3) and gain["result"] == "pass" and result.status == "pass"
    result.jobs[2].status, result.bars = "failed", []  # no scratch run: no gain, and the study errs
    results.judge_task(result, "cpu")
    assert result.bars[-1]["result"] == "not run" and result.status == "error"
