"""`finetune` end to end on the embedded set: training, evaluation parity, resume, determinism,
freezing, checkpoints that load with weights_only, TensorBoard output, and clear bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.folder import index_class_folders
from tasks.finetune import FinetuneTask
from tests.conftest import (
    assert_curves_only,
    assert_scalar_tags,
    hparams_scalars,
    read_events,
    with_old_model_keys,
)
from visionlab.errors import ConfigError, DataError
from visionlab.runner import evaluate, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One tiny two-epoch run shared by the tests that read its folder."""
    from tests.conftest import TINY_FINETUNE, compose_config

    run = tmp_path_factory.mktemp("trained")
    cfg = compose_config("train", [*TINY_FINETUNE, f"paths.data_dir={data_dir}", f"paths.run_dir={run}"])
    train(cfg)
    return run


def test_run_folder_holds_config_checkpoints_events_and_metrics(trained: Path) -> None:
    assert (trained / "config.yaml").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert "test/acc_class/circle" in metrics and "test/auroc" in metrics


def test_tensorboard_has_scalars_figures_and_hparams(trained: Path) -> None:
    acc = read_events(trained / "tensorboard")
    scalars = assert_scalar_tags(
        acc,
        "train/loss",
        "train/acc",
        "val/acc",
        "val/auroc",
        "time/epoch_s",
    )
    assert {"lr/AdamW/head", "lr/AdamW/backbone"} <= scalars  # one lr/ group, not lr-<optimizer>
    assert not any(t.startswith("lr-") for t in scalars)
    assert "epoch" not in scalars  # no staircase card opening SCALARS
    assert_curves_only(acc)  # test values: metrics.json, the summary ones HPARAMS
    assert hparams_scalars(trained) == {"val/acc", "test/acc", "test/auroc"}
    images = set(acc.Tags()["images"])
    assert {"val/confusion_matrix", "val/roc", "val/predictions"} <= images


def test_evaluate_reproduces_the_training_test_numbers(trained: Path, make_cfg) -> None:
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
        name="evaluate",
        run="eval",
        base=[b for b in _tiny() if "max_epochs" not in b],
    )
    results = evaluate(cfg)
    assert results["test/acc"] == pytest.approx(trained_metrics["test/acc"], abs=1e-6)
    assert results["test/auroc"] == pytest.approx(trained_metrics["test/auroc"], abs=1e-6)
    out = Path(cfg.paths.run_dir)
    assert json.loads((out / "metrics.json").read_text())["test/acc"] == results["test/acc"]
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "roc.png").stat().st_size > 1000


def test_checkpoint_loads_with_weights_only_and_keeps_class_names(trained: Path) -> None:
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["task_name"] == "finetune"
    assert state["hyper_parameters"]["data_info"]["class_names"][:2] == ["arrow", "circle"]
    module = FinetuneTask.load_from_checkpoint(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert module.class_names == state["hyper_parameters"]["data_info"]["class_names"]


def test_resume_continues_from_the_saved_epoch(trained: Path, make_cfg) -> None:
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_epochs=3",
        "run_test=false",
        run="resumed",
    )
    train(cfg)
    state = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    before = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert before["epoch"] == 1 and state["epoch"] == 2
    assert state["global_step"] == before["global_step"] * 3 // 2
    # the per-step schedule (scheduler=onecycle) went on, not restarted
    assert state["lr_schedulers"][0]["last_epoch"] == state["global_step"]


def test_a_checkpoint_with_the_old_freeze_keys_evaluates_resumes_and_seeds_weights(
    trained: Path, make_cfg, tmp_path: Path
) -> None:
    """Written before `model.freeze_backbone_epochs`: `freeze_backbone` / `unfreeze_epoch` in its hparams."""
    from tasks.nets.classifiers import build_classifier

    old = {"freeze_backbone": True, "unfreeze_epoch": 1}
    drop = ("freeze_backbone_epochs",)
    best = with_old_model_keys(trained / "checkpoints" / "best.ckpt", tmp_path / "best.ckpt", old, drop)
    last = with_old_model_keys(trained / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt", old, drop)
    base = [b for b in _tiny() if "max_epochs" not in b]
    results = evaluate(make_cfg(f"ckpt_path={best}", name="evaluate", run="eval_old", base=base))
    assert results["test/acc"] == pytest.approx(
        json.loads((trained / "metrics.json").read_text())["test/acc"]
    )
    cfg = make_cfg(f"ckpt_path={last}", "trainer.max_epochs=3", "run_test=false", run="resumed_old")
    train(cfg)
    assert torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    net = build_classifier("resnet10", 12, str(best))
    saved = torch.load(best, weights_only=True)["state_dict"]
    assert torch.equal(net.layer1[0].conv1.weight, saved["net.layer1.0.conv1.weight"])


def test_same_seed_gives_identical_metrics(make_cfg) -> None:
    runs = [
        train(make_cfg("seed=7", "trainer.max_epochs=1", "run_test=false", run=f"r{i}")) for i in range(2)
    ]
    assert runs[0] == runs[1]


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(make_cfg) -> None:
    from visionlab.runner import build_datamodule, build_trainer

    cfg = make_cfg("model.freeze_backbone_epochs=all", "trainer.max_epochs=1", "+trainer.limit_val_batches=0")
    dm = build_datamodule(cfg)
    module = FinetuneTask.from_config(cfg, dm.info())
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    build_trainer(cfg, [], False).fit(module, datamodule=dm)
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}, changed  # BN running stats included in "unchanged"


def test_unfreeze_epoch_trains_the_backbone_again(make_cfg) -> None:
    cfg = make_cfg("model.freeze_backbone_epochs=1")
    module = FinetuneTask.from_config(cfg, {"class_names": [str(i) for i in range(12)]})
    assert module.backbone_frozen(epoch=0) and not module.backbone_frozen(epoch=1)


# ---- bad input ----------------------------------------------------------------------------------


def test_missing_root_is_a_clear_error(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        train(make_cfg(f"data.root={tmp_path / 'nowhere'}"))


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "dog" / "a.png")
    with pytest.raises(DataError, match=r"cat is an empty class folder"):
        index_class_folders(tmp_path)


def _folders_with_a_broken_png(tmp_path: Path) -> Path:
    """cat/ and dog/ with 4 small PNGs each, and dog/broken.png that does not decode."""
    root = tmp_path / "images"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_corrupt_image_names_its_file(make_cfg, tmp_path: Path) -> None:
    root = _folders_with_a_broken_png(tmp_path)
    with pytest.raises(DataError, match=r"broken\.png: cannot decode image"):
        train(make_cfg(f"data.root={root}", "data.split_fractions=[0.5,0.25,0.25]"))


def test_user_folders_without_splits_are_split_reproducibly(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(20):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"{i}.png")
    first = index_class_folders(tmp_path, (0.6, 0.2, 0.2), seed=3)
    second = index_class_folders(tmp_path, (0.6, 0.2, 0.2), seed=3)
    assert {s: len(v) for s, v in first.samples.items()} == {"train": 24, "val": 8, "test": 8}
    assert first.samples == second.samples
    assert first.class_names == ["a", "b"]


def test_num_classes_disagreeing_with_folders(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model.num_classes=5 but the data has 12"):
        train(make_cfg("model.num_classes=5"))


def test_unknown_arch(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model.arch='lenet'"):
        train(make_cfg("model.arch=lenet"))


def test_missing_pretrained_weights_explain_where_to_put_them(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"nothing is downloaded"):
        train(make_cfg("model.weights=IMAGENET1K_V1", "model.arch=resnet18"))


def test_config_mistakes_print_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "model.arch=lenet",
            f"hydra.run.dir={tmp_path}",
            f"paths.data_dir={tmp_path / 'data'}",
            "data.synthetic.per_class={train: 1, val: 1, test: 1}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "error: model.arch='lenet' is not a finetune model" in result.stderr
    assert "Traceback" not in result.stderr


def _tiny() -> list[str]:
    from tests.conftest import TINY_FINETUNE

    return TINY_FINETUNE


def test_image_too_small_for_alexnet(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"data.image_size=32 is too small for model.arch=alexnet"):
        train(make_cfg("model.arch=alexnet"))


def test_resume_in_place_continues_the_same_folder(make_cfg, tmp_path: Path) -> None:
    first = make_cfg("trainer.max_epochs=1", "run_test=false", run="inplace")
    train(first)
    run = Path(first.paths.run_dir)
    train(make_cfg(f"resume={run}", "trainer.max_epochs=2", "run_test=false", run="ignored"))
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val/acc")]
    assert len(steps) == 2 and steps[0] < steps[1]  # one history across the resume, no repeated epoch
    assert not (tmp_path / "ignored" / "checkpoints").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch) -> None:
    from visionlab.checkpointing import NonFiniteLossError

    cfg = make_cfg("trainer.max_epochs=3", "run_test=false")
    original = FinetuneTask.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.current_epoch == 1 else loss

    monkeypatch.setattr(FinetuneTask, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"NaN/Inf at step 3 .*last\.ckpt"):
        train(cfg)
    state = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_malicious_checkpoint_is_refused_without_running_it(tmp_path: Path, make_cfg) -> None:
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"task_name": "finetune", "x": Payload()}))
    with pytest.raises(DataError, match=r"bad\.ckpt: not a loadable checkpoint"):
        evaluate(
            make_cfg(
                f"ckpt_path={bad}",
                name="evaluate",
                run="eval_bad",
                base=[b for b in _tiny() if "max_epochs" not in b],
            )
        )
    assert not marker.exists()


def test_on_bad_file_skip_leaves_broken_images_out_with_a_count(tmp_path: Path) -> None:
    from datamodules.folder import FolderDataModule

    root = _folders_with_a_broken_png(tmp_path)
    dm = FolderDataModule(
        data_dir=str(tmp_path),
        root=str(root),
        image_size=16,
        split_fractions=(1.0, 0.0, 0.0),
        on_bad_file="skip",
    )
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\) of 9; first: .*broken\.png"):
        dm.setup()
    assert len(dm.datasets["train"]) == 8
    with pytest.raises(ConfigError, match=r"data\.on_bad_file='ignore'"):
        FolderDataModule(data_dir=str(tmp_path), root=str(root), on_bad_file="ignore")


def test_checkpoints_of_another_task_or_model_shape_are_refused_by_name(
    trained: Path, make_cfg, tmp_path: Path
) -> None:
    from visionlab.errors import ConfigError

    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    other = tmp_path / "pose.ckpt"
    torch.save({**state, "task_name": "pose"}, other)
    with pytest.raises(ConfigError, match=r"pose\.ckpt is not a finetune checkpoint \(task: pose\)"):
        evaluate(
            make_cfg(
                f"ckpt_path={other}", name="evaluate", base=[b for b in _tiny() if "max_epochs" not in b]
            )
        )
    with pytest.raises(ConfigError, match=r"pose\.ckpt is not a finetune checkpoint"):
        train(make_cfg(f"ckpt_path={other}", "trainer.max_epochs=3"))

    resized = tmp_path / "resized.ckpt"
    weights = dict(state["state_dict"])
    weights["net.fc.weight"] = weights["net.fc.weight"][:5]
    weights["net.fc.bias"] = weights["net.fc.bias"][:5]
    torch.save({**state, "state_dict": weights}, resized)
    with pytest.raises(
        ConfigError, match=r"resized\.ckpt: its weights do not fit the configured finetune model"
    ):
        train(make_cfg(f"ckpt_path={resized}", "trainer.max_epochs=3"))
    with pytest.raises(ConfigError, match=r"resized\.ckpt: its weights do not fit the finetune model"):
        evaluate(
            make_cfg(
                f"ckpt_path={resized}", name="evaluate", base=[b for b in _tiny() if "max_epochs" not in b]
            )
        )


def test_a_one_class_folder_is_named_with_what_was_found(tmp_path: Path) -> None:
    from visionlab.errors import DataError

    (tmp_path / "cats").mkdir()
    for i in range(3):
        (tmp_path / "cats" / f"{i}.png").write_bytes(b"")
    with pytest.raises(
        DataError, match=rf"{tmp_path} has one class folder, cats/ \(3 files\); a classifier needs at least 2"
    ):
        index_class_folders(tmp_path)


def test_the_prediction_grid_spreads_over_the_classes() -> None:
    """Validation is sorted by class: the grid still shows every class, round-robin, right and wrong."""
    from types import SimpleNamespace

    from tasks.finetune import GRID_SIZE, FinetuneTask

    grid = SimpleNamespace(class_names=[f"c{i}" for i in range(12)], _grid=None)
    labels = torch.arange(12).repeat_interleave(10)  # 10 images per class, sorted
    raw = torch.zeros(len(labels), 8, 8, 3, dtype=torch.uint8)
    for start in range(0, len(labels), 32):  # batches of 32, as a loader yields them
        part = slice(start, start + 32)
        FinetuneTask._collect_grid(grid, raw[part], labels[part], labels[part])
    _, shown, _ = FinetuneTask._grid_batch(grid)
    assert len(shown) == GRID_SIZE
    assert shown[:12].tolist() == list(range(12))  # one of each class first
