"""`augment=` / `gpu_augment=`: named recipes per task, defaults untouched, command-line lists win."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, compose_config

CONF = Path(CONF_DIR)
ROOT = CONF.parent
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
EMBED_STUDY = ["none", "rotate", "shift", "flip", "noise", "blur"]
#: the experiment whose data.augment each task's `augment=reference` repeats (None: no augmentation)
REFERENCE = {
    "pose": "pose_augmented",
    "segment": "segment_fcn_improved",
    "finetune": "finetune_alexnet",
    "defect": "defect_ae_aug",
    "embed": "embed_mnist",
}
#: the transform names each embed single-transform recipe gives, CPU and GPU
EMBED_SINGLES = {
    "rotate": ("Affine", "RandomRotation"),
    "shift": ("Affine", "RandomAffine"),
    "flip": ("HorizontalFlip", "RandomHorizontalFlip"),
    "noise": ("GaussNoise", "RandomGaussianNoise"),
    "blur": ("GaussianBlur", "RandomGaussianBlur"),
}


def recipes(group: str, task: str) -> list[str]:
    """The options of `group` that `task` has (conf/<group>/recipes/<task>/*.yaml)."""
    return sorted(p.stem for p in (CONF / group / "recipes" / task).glob("*.yaml"))


def plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if value is not None else None


def names(specs: Any) -> list[str]:
    return [str(s["name"]) for s in specs or []]


@pytest.mark.parametrize("group", ["augment", "gpu_augment"])
def test_every_recipe_has_an_option_and_every_task_has_default_and_none(group: str) -> None:
    options = {p.stem for p in (CONF / group).glob("*.yaml")}
    for task in TASKS:
        assert {"default", "none"} <= set(recipes(group, task)) <= options, task
    reference = {"reference"} if group == "augment" else set()  # no measured kornia recipe for embed
    assert set(recipes(group, "embed")) == {"default", "none", *reference, *EMBED_SINGLES}


def load(group: str, task: str, option: str) -> dict[str, Any]:
    """The recipe file as written (unresolved)."""
    path = CONF / group / "recipes" / task / f"{option}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}


def test_default_recipes_are_empty_and_the_others_set_only_their_key() -> None:
    for group in ("augment", "gpu_augment"):
        for task in TASKS:
            assert load(group, task, "default") == {}, (group, task)  # nothing merged: defaults unchanged
            for option in recipes(group, task):
                assert set(load(group, task, option)) <= {group}, (group, task, option)
            assert load(group, task, "none") == {group: None}
        for option, transforms in EMBED_SINGLES.items():
            assert names(load(group, "embed", option)[group]) == [transforms[group == "gpu_augment"]]


@pytest.mark.parametrize("task", TASKS)
def test_each_option_composes_for_each_task_it_applies_to(task: str) -> None:
    base = compose_config("train", [f"task={task}"])
    for option in recipes("augment", task):
        if option in ("default", "reference"):  # default: below; reference: its own test
            continue
        data = compose_config("train", [f"task={task}", f"augment={option}"]).data
        assert plain(data.augment) == load("augment", task, option)["augment"]
        assert plain(data.gpu_augment) == plain(base.data.gpu_augment)  # one group sets one key
    if task == "embed":
        data = compose_config("train", ["task=embed", "gpu_augment=rotate"]).data
        assert names(data.gpu_augment) == ["RandomRotation"] and data.augment == base.data.augment


@pytest.mark.parametrize("task", sorted(set(REFERENCE) - {"embed"}))
def test_reference_is_the_reference_experiments_recipe(task: str) -> None:
    def unresolved(cfg: Any, key: str) -> Any:  # a recipe may follow ${data.image_size}
        return OmegaConf.to_container(cfg.data, resolve=False)[key]

    experiment = compose_config("train", [f"experiment={REFERENCE[task]}"])
    cfg = compose_config("train", [f"task={task}", "augment=reference"])
    assert unresolved(cfg, "augment") == unresolved(experiment, "augment")
    OmegaConf.to_container(cfg.data, resolve=True)
    if task == "pose":
        gpu = compose_config("train", ["experiment=pose_augmented_gpu"])
        on_gpu = compose_config("train", ["task=pose", "augment=none", "gpu_augment=reference"])
        assert plain(on_gpu.data.gpu_augment) == plain(gpu.data.gpu_augment) and on_gpu.data.augment is None


def test_embed_reference_is_no_augmentation_like_its_reference_experiments() -> None:
    assert load("augment", "embed", "reference") == {"augment": None}
    for experiment in ("embed_mnist", "embed_convnet", "embed_cpu"):
        assert "augment" not in (OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").get("data") or {})
    assert OmegaConf.load(CONF / "task" / "embed.yaml").data.augment is None


def test_without_the_groups_tasks_and_experiments_keep_their_lists() -> None:
    expected = {
        "pose": ["HorizontalFlip"],
        "segment": ["HorizontalFlip"],
        "finetune": ["HorizontalFlip", "ColorJitter"],
        "defect": [],
        "embed": [],
    }
    for task in TASKS:
        data = compose_config("train", [f"task={task}"]).data
        assert names(data.augment) == expected[task] and data.gpu_augment is None
    for experiment in ("pose_augmented_gpu", "segment_fcn_improved", "finetune_cpu"):
        own = OmegaConf.to_container(
            OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"), resolve=False
        )
        cfg = OmegaConf.to_container(
            compose_config("train", [f"experiment={experiment}"]).data, resolve=False
        )
        for key in ("augment", "gpu_augment"):
            if key in own["data"]:
                assert cfg[key] == own["data"][key], (experiment, key)


def test_an_option_wins_over_the_experiment_and_a_command_line_list_wins_over_both() -> None:
    cfg = compose_config("train", ["experiment=pose_augmented", "augment=none"])
    assert cfg.data.augment is None
    cfg = compose_config("train", ["experiment=embed_cpu", "augment=rotate"])
    assert cfg.task_name == "embed" and names(cfg.data.augment) == ["Affine"]
    custom = "data.augment=[{name: VerticalFlip, p: 0.3}]"
    cfg = compose_config("train", ["task=embed", "augment=blur", custom])
    assert plain(cfg.data.augment) == [{"name": "VerticalFlip", "p": 0.3}]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["task=finetune", "gpu_augment=reference"],
            "gpu_augment=reference is not an option for task=finetune; "
            "the finetune gpu_augment options are default, none",
        ),
        (["experiment=pose_cpu", "augment=blur"], "augment=blur is not an option for task=pose"),
        (["task=embed", "augment=rotat"], "did you mean augment=rotate?"),
    ],
)
def test_a_wrong_option_is_named_with_the_valid_ones(args: list[str], expected: str) -> None:
    from hydra.errors import MissingConfigException

    from visionlab.cli import hydra_error_message

    with pytest.raises(MissingConfigException) as err:
        compose_config("train", args)
    assert expected in hydra_error_message(err.value)


@pytest.mark.slow
def test_embed_recipes_build_and_run_on_digits() -> None:
    import numpy as np

    from datamodules.transforms import build_augment

    image = np.zeros((28, 28, 1), np.uint8)
    image[8:20, 12:16] = 255
    for option in EMBED_SINGLES:
        augment = build_augment([{**s, "p": 1.0} for s in load("augment", "embed", option)["augment"]])
        assert augment is not None
        out = augment(image=image)["image"]
        assert out.shape == image.shape and out.dtype == np.uint8


def run_train(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            *args,
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.output_dir={tmp_path / 'outputs'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_wrong_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_train("task=segment", "augment=rotate", tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        "error: augment=rotate is not an option for task=segment; the segment augment options are "
        "default, none, reference"
    ]
    assert not (tmp_path / "data").exists() and not (tmp_path / "outputs").exists()


def test_help_lists_the_groups() -> None:
    from visionlab.help import help_text

    text = help_text("train")
    assert "augment: blur, default, flip, noise, none, reference, rotate, shift" in text
    assert "gpu_augment: blur, default, flip, noise, none, reference, rotate, shift" in text


@pytest.mark.slow
def test_the_embed_augmentation_study_is_one_sweep_with_one_summary_row_per_recipe(tmp_path: Path) -> None:
    result = run_train(
        "-m",
        "task=embed",
        f"augment={','.join(EMBED_STUDY)}",
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.enable_progress_bar=false",
        "data.synthetic.num_train=400",
        "data.synthetic.num_test=100",
        "symbols.train=null",
        "projector.digits=0",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "sweep" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["augment"] for r in rows] == EMBED_STUDY
    assert all(r["status"] == "completed" and r["val/acc"] for r in rows), rows
