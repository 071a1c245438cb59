"""The transfer study (experiment=finetune_pretrain, then finetune_transfer): embedded class subsets are
the full set's images of those classes in their own folder, a bad class name fails first, the two
experiments chain through the pinned pretrain run folder, and a missing pretrain checkpoint says how
to make it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from datamodules.folder import FolderDataModule
from datamodules.synthetic.shapes import CLASS_NAMES, generate_shapes
from tasks.finetune import FinetuneTask
from tasks.nets.weights import resolve_weights_file
from tests.conftest import CONF_DIR, TINY_FINETUNE, compose_config
from visionlab.errors import ConfigError
from visionlab.runner import train

TINY_SET = {"per_class": {"train": 2, "val": 1, "test": 1}, "image_size": 32, "seed": 0, "level": "easy"}


def test_a_class_subset_is_the_full_sets_images_of_those_classes(tmp_path: Path) -> None:
    generate_shapes(tmp_path / "full", **TINY_SET)
    generate_shapes(tmp_path / "subset", **TINY_SET, classes=["ring", "arrow"])
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (tmp_path / "subset" / split).iterdir()) == ["arrow", "ring"]
    subset = sorted((tmp_path / "subset").rglob("*.png"))
    assert len(subset) == 2 * 4
    for path in subset:
        assert path.read_bytes() == (tmp_path / "full" / path.relative_to(tmp_path / "subset")).read_bytes()


def test_an_unknown_class_name_is_one_config_error_before_any_data_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.synthetic\.classes: unknown class names \['blob'\]") as err:
        FolderDataModule(data_dir=str(tmp_path), synthetic={"level": "easy", "classes": ["arrow", "blob"]})
    assert "valid: " + ", ".join(CLASS_NAMES) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        FolderDataModule(data_dir=str(tmp_path), synthetic={"level": "easy", "classes": ["arrow"]})
    assert not any(tmp_path.iterdir())


def test_a_subset_has_its_own_folder_and_the_full_set_keeps_its_own(tmp_path: Path) -> None:
    def root(**synthetic: object) -> Path:
        return FolderDataModule(
            data_dir=str(tmp_path), synthetic={"level": "easy", **synthetic}
        ).resolved_root

    full = root()
    assert full.parent == tmp_path and full.name.startswith("finetune_shapes_easy_")
    assert root(classes=None) == root(classes=list(CLASS_NAMES)) == full
    half = root(classes=["arrow", "circle", "crescent"])
    assert half != full and half.name.startswith("finetune_shapes_easy_3cls_")
    assert root(classes=["crescent", "arrow", "circle"]) == half  # the set, not its order
    assert root(classes=["arrow", "circle", "cross"]) != half


def test_the_transfer_experiment_reads_the_pinned_pretrain_checkpoint() -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        pretrain = compose(
            "train", ["experiment=finetune_pretrain", "paths.output_dir=/x"], return_hydra_config=True
        )
    transfer = compose_config("train", ["experiment=finetune_transfer", "paths.output_dir=/x"])
    assert pretrain.hydra.run.dir == "/x/finetune_pretrain"
    assert transfer.model.weights == "/x/finetune_pretrain/checkpoints/best.ckpt"
    assert pretrain.model.arch == transfer.model.arch
    source, target = pretrain.data.synthetic.classes, transfer.data.synthetic.classes
    assert not set(source) & set(target) and sorted([*source, *target]) == sorted(CLASS_NAMES)


def test_a_missing_pretrain_checkpoint_names_the_file_and_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "finetune_pretrain" / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match=r"python train\.py experiment=finetune_pretrain") as err:
        resolve_weights_file("resnet10", str(missing))
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_pretrain_then_transfer_on_tiny_sets(tmp_path: Path, data_dir: Path) -> None:
    """Both experiments as a user chains them (tiny): the transfer's network starts from the pretrain's
    best.ckpt with a new 6-class head, and trains and tests on the other six classes."""
    tiny = [*TINY_FINETUNE, "data.synthetic.per_class={train: 4, val: 2, test: 2}", "trainer.max_epochs=1"]
    common = [*tiny, f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"]
    pretrain_dir = tmp_path / "finetune_pretrain"
    train(compose_config("train", ["experiment=finetune_pretrain", *common, f"paths.run_dir={pretrain_dir}"]))
    cfg = compose_config(
        "train", ["experiment=finetune_transfer", *common, f"paths.run_dir={tmp_path / 'run'}"]
    )
    source = torch.load(pretrain_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    names = list(cfg.data.synthetic.classes)
    start = FinetuneTask.from_config(cfg, {"class_names": names, "image_size": 32}).net
    torch.testing.assert_close(start.conv1.weight, source["net.conv1.weight"])
    assert start.fc.out_features == 6 and source["net.fc.weight"].shape[0] == 6
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/acc_class/{name}" for name in names} <= set(metrics)
    assert "test/acc_class/arrow" not in metrics
