"""What TensorBoard shows for runs of several tasks in one logdir (`tensorboard --logdir outputs`):
HPARAMS read back with TensorBoard's own hparams plugin, SCALARS read back with EventAccumulator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY_FINETUNE, compose_config
from tests.test_embed import TINY_EMBED
from visionlab.hparams import log_final_hparams
from visionlab.runner import train

#: 2 epochs of a few batches each, so every curve has two points
SHORT = ["trainer.max_epochs=2", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]
#: what two tasks' runs end with (metrics.json keys), per-class values included
FINAL = {
    "finetune": {
        "val/acc": 0.5,
        "best/val/acc": 0.6,
        "test/acc": 0.55,
        "test/auroc": 0.8,
        "test/acc_class/ring": 1.0,
    },
    "embed": {"val/acc": 0.9, "best/val/acc": 0.92, "test/acc": 0.91, "test/symbols/loo_1nn_acc": 0.7},
}
HEADLINE = {"finetune": ("test/acc", "test/auroc"), "embed": ("test/acc", "test/symbols/loo_1nn_acc")}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One tiny finetune run and one tiny embed run under one output folder."""
    outputs = tmp_path_factory.mktemp("outputs")
    tiny_embed = [
        *TINY_EMBED,
        "data.synthetic={num_train: 120, num_test: 40, seed: 0}",
        "projector.digits=20",
    ]
    for task, base in (("finetune", TINY_FINETUNE), ("embed", tiny_embed)):
        overrides = [*base, *SHORT, f"paths.data_dir={data_dir}", f"paths.run_dir={outputs / task / 'run'}"]
        train(compose_config("train", overrides))
    return outputs


def read_hparams(
    logdir: Path, configs: dict[str, dict] | None = None
) -> tuple[set[str], set[str], dict[str, dict[str, float]]]:
    """What the HPARAMS tab gets: its hparam columns, its metric columns, and each session's metric
    values by session name (the run), through the plugin's own request handlers; `configs`, when
    given, receives each session's hparam values."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    backend = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), data_provider=provider, multiplexer=multiplexer)
    )
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    metric_names = [info.name for info in experiment.metric_infos]
    query = api_pb2.ListSessionGroupsRequest(
        col_params=[api_pb2.ColParams(metric=name) for name in metric_names],
        allowed_statuses=list(api_pb2.Status.values()),
        start_index=0,
        slice_size=100,
    )
    groups = list_session_groups.Handler(request, backend, "", query).run().session_groups
    values = {
        session.name: {v.name.tag: v.value for v in session.metric_values}
        for group in groups
        for session in group.sessions
    }
    if configs is not None:
        from google.protobuf.json_format import MessageToDict

        for group in groups:
            for session in group.sessions:
                configs[session.name] = {k: MessageToDict(v) for k, v in group.hparams.items()}
    return {h.name for h in experiment.hparam_infos}, {n.tag for n in metric_names}, values


def test_hparams_sessions_of_two_tasks_keep_their_own_columns(tmp_path: Path) -> None:
    """The end of a finetune run and of an embed run, written into one logdir as train() does."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for task in ("finetune", "embed"):
        run = tmp_path / task / "run"
        cfg = compose_config("train", [f"task={task}", f"paths.run_dir={run}"])
        logger = TensorBoardLogger(save_dir=str(run), name="tensorboard", version="")
        log_final_hparams([logger], cfg, FINAL[task], HEADLINE[task], step=10)
    hparams, metrics, sessions = read_hparams(tmp_path)
    assert {"task_name", "model/arch", "projector/digits"} <= hparams
    assert metrics == {"val/acc", "test/acc", "test/auroc", "test/symbols/loo_1nn_acc"}
    summary = {"val/acc", "test/acc", "test/auroc", "test/symbols/loo_1nn_acc"}  # no best/*, no per-class
    for task in ("finetune", "embed"):
        expected = {k: v for k, v in FINAL[task].items() if k in summary}
        assert sessions[f"{task}/run/tensorboard/hparams"] == pytest.approx(expected)


def test_a_resumed_run_has_one_hparams_row_with_its_latest_config(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    run = tmp_path / "finetune" / "run"
    for epochs, acc in ((2, 0.4), (5, 0.7)):  # the first part, then its resume in the same folder
        cfg = compose_config(
            "train", ["task=finetune", f"paths.run_dir={run}", f"trainer.max_epochs={epochs}"]
        )
        logger = TensorBoardLogger(save_dir=str(run), name="tensorboard", version="")
        log_final_hparams(
            [logger], cfg, {**FINAL["finetune"], "test/acc": acc}, HEADLINE["finetune"], step=epochs
        )
    configs: dict[str, dict] = {}
    _, _, sessions = read_hparams(tmp_path, configs)
    assert sessions["finetune/run/tensorboard/hparams"]["test/acc"] == pytest.approx(0.7)
    assert configs["finetune/run/tensorboard/hparams"]["trainer/max_epochs"] == 5
    assert len(list((run / "tensorboard" / "hparams").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_hparams_shows_every_task_with_its_own_metrics_in_a_shared_logdir(logdir: Path) -> None:
    hparams, metrics, sessions = read_hparams(logdir)
    assert {"task_name", "model/arch", "projector/digits"} <= hparams  # finetune's and embed's keys
    assert {"test/acc", "test/auroc", "val/acc", "test/symbols/loo_1nn_acc"} <= metrics
    assert not any(m.startswith(("train/", "lr/", "time/")) for m in metrics)  # curves are no columns
    by_task = {name.split("/")[0]: values for name, values in sessions.items()}
    assert set(by_task) == {"finetune", "embed"}
    assert {"test/acc", "test/auroc", "val/acc"} <= set(by_task["finetune"])
    assert {"test/acc", "test/symbols/loo_1nn_acc", "val/acc"} <= set(by_task["embed"])
    assert "test/auroc" not in by_task["embed"]
    finetune_run = next(iter(sorted(logdir.glob("finetune/*/tensorboard"))))
    assert (finetune_run / "hparams").is_dir()


@pytest.mark.slow
def test_scalars_hold_only_curves(logdir: Path) -> None:
    for run in sorted(logdir.glob("*/*/tensorboard")):
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert "train/loss" in tags and "val/acc" in tags, tags
        one_point = [t for t in tags if len(acc.Scalars(t)) < 2]
        assert one_point == [], f"{run}: one-point scalar cards {one_point}"
        assert not any(t.startswith(("test/", "final/")) or t == "epoch" for t in tags), tags


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser")), reason="no Chromium")
def test_screenshot_script_writes_a_picture_per_dashboard(tmp_path: Path) -> None:
    """benchmarks.tensorboard_screenshots on a given logdir: TensorBoard served, one PNG per dashboard."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from benchmarks.tensorboard_screenshots import main

    run = tmp_path / "logs" / "finetune" / "run"
    cfg = compose_config("train", ["task=finetune", f"paths.run_dir={run}"])
    logger = TensorBoardLogger(save_dir=str(run), name="tensorboard", version="")
    logger.log_metrics({"train/loss": 1.0}, step=1)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    log_final_hparams([logger], cfg, FINAL["finetune"], HEADLINE["finetune"], step=2)
    out = tmp_path / "shots"
    main(
        [
            "--logdir",
            str(tmp_path / "logs"),
            "--out",
            str(out),
            "--dashboards",
            "scalars,hparams",
            "--wait-ms",
            "8000",
        ]
    )
    for name in ("scalars", "hparams"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, name  # a rendered page, not a blank one


def test_hparams_table_leaves_out_the_plumbing_keys(tmp_path: Path) -> None:
    """HPARAMS shows hyperparameters (model/arch, optimizer/lr), not class paths or table positions."""
    from tests.conftest import compose_config
    from visionlab.hparams import flatten_config

    flat = flatten_config(compose_config("train", ["task=embed", f"paths.run_dir={tmp_path}"]))
    assert flat["model/arch"] == "mnist_net" and "optimizer/lr" in flat
    plumbing = ("lightning_module", "datamodule", "task_order", "paths")
    assert not [k for k in flat if k.split("/")[0] in plumbing]
