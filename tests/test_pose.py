"""`pose` end to end on the embedded drawn people: LSP/LSPet loading through the datamodule, flip with
left/right swap, stage-1 training and evaluation parity, stage-2 refiners from prev_ckpt and from
discovery, chain evaluation side by side, TensorBoard content, checkpoints and bad-input errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.lsp import LSPDataModule
from datamodules.lsp_format import JOINT_NAMES
from tasks.pose import PoseTask
from tests.conftest import QUIET_CPU, hparams_scalars
from visionlab.errors import ConfigError, DataError
from visionlab.runner import evaluate, train

LSPET = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lspet"
R_WRIST, L_WRIST = JOINT_NAMES.index("r_wrist"), JOINT_NAMES.index("l_wrist")

#: 48 drawn people (24 train+val / 24 test), 64 px input, an eighth-width network, 2 epochs
TINY_POSE = [
    "task=pose",
    "data.image_size=64",
    "model.width=0.125",
    "data.synthetic.num_images=48",
    "data.train_count=24",
    "data.val_fraction=0.25",
    "data.batch_size=8",
    "data.num_workers=0",
    *QUIET_CPU,
]


def _cfg(data_dir: Path, outputs: Path, run: str, *overrides: str, name: str = "train"):
    from tests.conftest import compose_config

    base = [b for b in TINY_POSE if name == "train" or "max_epochs" not in b]
    return compose_config(
        name,
        [*base, f"paths.data_dir={data_dir}", f"paths.output_dir={outputs}",
         f"paths.run_dir={outputs / 'pose' / run}", *overrides],
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """A stage-1 run, then a stage-2 run refining it (prev_ckpt given), in one outputs folder."""
    outputs = tmp_path_factory.mktemp("pose_outputs")
    train(_cfg(data_dir, outputs, "stage1"))
    stage1 = outputs / "pose" / "stage1"
    prev = stage1 / "checkpoints" / "best.ckpt"
    train(_cfg(data_dir, outputs, "stage2", "stage=2", f"prev_ckpt={prev}", "trainer.max_epochs=1"))
    return {"outputs": outputs, "stage1": stage1, "stage2": outputs / "pose" / "stage2"}


# ---- data ------------------------------------------------------------------------------------------


def _marked_lsp(root: Path) -> np.ndarray:
    """One 80x60 original-LSP image of a front-facing figure (its right side on the image's left): a red
    patch at the right wrist, a blue one at the left wrist; the left wrist is flagged occluded."""
    (root / "images").mkdir(parents=True)
    xy = np.zeros((14, 2))
    xy[:, 1] = 30
    xy[[0, 1, 2, 6, 7, 8], 0] = [20, 22, 30, 10, 15, 28]  # right side: image left
    xy[[5, 4, 3, 11, 10, 9], 0] = [60, 58, 50, 70, 65, 52]  # left side: image right
    xy[[12, 13], 0] = 40
    image = np.full((60, 80, 3), 128, np.uint8)
    for joint, colour in ((R_WRIST, (255, 0, 0)), (L_WRIST, (0, 0, 255))):
        x, y = xy[joint].astype(int)
        image[y - 4 : y + 4, x - 4 : x + 4] = colour
    Image.fromarray(image).save(root / "images" / "im0001.jpg", quality=100)
    joints = np.zeros((3, 14, 1))
    joints[:2, :, 0] = xy.T
    joints[2, L_WRIST, 0] = 1  # original LSP: 1 = not visible
    scipy.io.savemat(str(root / "joints.mat"), {"joints": joints})
    return xy


def _single(root: Path, augment: list | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dm = LSPDataModule(str(root), root=str(root), image_size=64, train_count=None, val_fraction=0.0,
                       test_fraction=0.0, num_workers=0, augment=augment)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    image, joints, visible = dm.datasets["train"][0]
    return image.numpy(), joints.numpy(), visible.numpy()


def _colour_at(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = np.floor(point).astype(int)
    return image[y, x].astype(int)


def test_letterbox_keeps_joints_on_their_pixels(tmp_path: Path) -> None:
    xy = _marked_lsp(tmp_path)
    image, joints, visible = _single(tmp_path, None)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # 80x60 -> 64x48, padded 8 px above and below
    assert np.allclose(joints, xy * 0.8 + [0, 8], atol=1e-4)
    assert (image[:8] == 0).all() and (image[-8:] == 0).all()
    assert _colour_at(image, joints[R_WRIST])[0] > 200  # red under the right wrist
    assert visible.sum() == 13 and not visible[L_WRIST]


def test_flip_keeps_the_persons_left_wrist_labelled_left(tmp_path: Path) -> None:
    _marked_lsp(tmp_path)
    image, joints, visible = _single(tmp_path, [{"name": "HorizontalFlip", "p": 1.0}])
    # The mirrored figure still faces the camera, so its left side is on the image's right ...
    assert joints[L_WRIST, 0] > 32 > joints[R_WRIST, 0]
    assert (joints[[3, 4, 5, 9, 10, 11], 0] > 32).all() and (joints[[0, 1, 2, 6, 7, 8], 0] < 32).all()
    # ... and its left hand is the mirror image of the original right hand (the red patch)
    red = _colour_at(image, joints[L_WRIST])
    assert red[0] > 200 and red[2] < 60
    assert _colour_at(image, joints[R_WRIST])[2] > 200  # blue: the original left hand
    # the occlusion flag travels with the hand: the original left (now right) wrist is the hidden one
    assert visible[L_WRIST] and not visible[R_WRIST]


def test_joints_pushed_out_of_the_frame_keep_their_row_and_become_invisible(tmp_path: Path) -> None:
    _marked_lsp(tmp_path)
    _, before, visible_before = _single(tmp_path, None)
    shift = {"name": "Affine", "translate_px": {"x": [20, 20], "y": [0, 0]}, "p": 1.0}
    _, after, visible = _single(tmp_path, [shift])
    assert after.shape == (14, 2) and np.allclose(after, before + np.array([20.0, 0.0]), atol=1e-3)
    outside = after[:, 0] >= 64
    assert outside.any() and not visible[outside].any()
    assert np.array_equal(visible[~outside], visible_before[~outside])


def test_the_augmented_recipe_runs_on_keypoints(tmp_path: Path) -> None:
    from tests.conftest import compose_config

    _marked_lsp(tmp_path)
    augment = compose_config("train", ["experiment=pose_augmented"]).data.augment
    dm = LSPDataModule(str(tmp_path), root=str(tmp_path), image_size=64, train_count=None,
                       val_fraction=0.0, test_fraction=0.0, num_workers=0,
                       augment=[dict(a) for a in augment])  # fmt: skip
    dm.setup("fit")
    seen = set()
    for _ in range(8):
        image, joints, visible = (t.numpy() for t in dm.datasets["train"][0])
        assert image.shape == (64, 64, 3) and joints.shape == (14, 2) and visible.shape == (14,)
        inside = (joints >= 0).all(axis=1) & (joints < 64).all(axis=1)
        assert not (visible & ~inside).any()
        seen.add(round(float(joints[0, 0]), 3))
    assert len(seen) > 1  # the pipeline is random per call


@pytest.mark.skipif(not LSPET.is_dir(), reason="shared LSPet fixture not present")
def test_lspet_fixture_loads_through_the_datamodule(tmp_path: Path) -> None:
    dm = LSPDataModule(str(tmp_path), root=str(LSPET), image_size=64, num_workers=0, batch_size=16)
    dm.prepare_data()
    with pytest.warns(UserWarning, match="390 of 400 annotations have no image file and are skipped"):
        dm.setup("fit")
    assert dm.info()["layout"] == "lspet"
    assert {s: len(d) for s, d in dm.datasets.items()} == {"train": 7, "val": 1, "test": 2}
    images, joints, visible = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[1:] == (64, 64, 3)
    assert joints.shape[1:] == (14, 2) and visible.dtype == torch.bool
    every = np.concatenate([d.visible for d in dm.datasets.values()])
    assert (~every).sum() > 0 and every.mean() > 0.5  # off-image joints of images 1, 3, 5 are hidden
    inside = np.concatenate([d.joints for d in dm.datasets.values()])[every]
    assert ((inside >= 0) & (inside < 64)).all()


@pytest.mark.parametrize(
    ("cache", "available", "kept"),
    [(True, 0, True), (False, 10**12, False), ("auto", 10**12, True), ("auto", 1000, False)],
)
def test_cache_images_auto_follows_the_available_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: bool | str, available: int, kept: bool
) -> None:
    """`auto` keeps the decoded images only when they fit in a quarter of the available memory; without
    the cache every sample is decoded on access and is the same."""
    import datamodules.common

    monkeypatch.setattr(datamodules.common, "available_memory_bytes", lambda: available)
    _marked_lsp(tmp_path)
    dm = LSPDataModule(str(tmp_path), root=str(tmp_path), image_size=64, train_count=None, val_fraction=0.0,
                       test_fraction=0.0, num_workers=0, cache_images=cache)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    assert (train.images is not None) == kept
    image, _, _ = train[0]
    assert torch.equal(image, dm.plain_dataset("train")[0][0])
    with pytest.raises(ConfigError, match=r"data\.cache_images='sometimes' must be true, false or auto"):
        LSPDataModule(str(tmp_path), cache_images="sometimes")


def test_datamodule_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.visible_value=2"):
        LSPDataModule(str(tmp_path), visible_value=2)
    with pytest.raises(ConfigError, match=r"data.augment\[0\].name='Flop'"):
        LSPDataModule(str(tmp_path), augment=[{"name": "Flop"}])
    with pytest.raises(ConfigError, match=r"data\.val_fraction=1\.5"):
        LSPDataModule(str(tmp_path), val_fraction=1.5)
    dm = LSPDataModule(str(tmp_path), root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        dm.setup("fit")


# ---- stage 1 ---------------------------------------------------------------------------------------


def test_stage1_run_folder_and_metrics(runs: dict[str, Path]) -> None:
    run = runs["stage1"]
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/pcp/mean", "test/pcp/upper_arms", "test/pdj@0.2", "test/pdj@0.5/l_wrist",
                "test/stage1/pcp/mean", "best/val/pcp/mean"):  # fmt: skip
        assert key in metrics, key
    assert 0.0 <= metrics["test/pdj@0.5"] <= 1.0
    summary = hparams_scalars(run)  # HPARAMS: the last stage's summary, no test/stage1/* repeat
    assert {"val/pcp/mean", "test/pcp/mean", "test/pdj@0.2"} <= summary
    assert not any(t.startswith("test/stage1/") for t in summary)
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert state["task_name"] == "pose"
    assert state["hyper_parameters"]["stage"] == 1 and state["hyper_parameters"]["parent_ckpts"] == []


def test_tensorboard_has_scalars_skeletons_and_pdj_curve(runs: dict[str, Path]) -> None:
    tags = _tb_tags(runs["stage1"])
    for tag in ("train/loss", "train/pcp/mean", "train/pdj@0.2", "val/loss", "val/pcp/mean",
                "val/pcp/lower_arms", "val/pdj@0.2", "val/pdj@0.5"):  # fmt: skip
        assert tag in tags["scalars"], f"{tag} missing from {sorted(tags['scalars'])}"
    assert not any(t.startswith(("test/", "final/")) for t in tags["scalars"])  # in HPARAMS, metrics.json
    assert {"val/skeletons", "val/pdj_curve", "test/pdj_curve"} <= set(tags["images"])
    assert "val/refiner_crops" not in tags["images"]


def test_evaluate_reproduces_the_stage1_test_numbers(runs: dict[str, Path], data_dir: Path) -> None:
    trained = json.loads((runs["stage1"] / "metrics.json").read_text())
    cfg = _cfg(data_dir, runs["outputs"], "eval1", f"ckpt_path={runs['stage1'] / 'checkpoints' / 'best.ckpt'}",
               name="evaluate")  # fmt: skip
    results = evaluate(cfg)
    for key in ("test/pcp/mean", "test/pdj@0.2", "test/pdj@0.5", "test/pdj@0.2/r_ankle"):
        assert results[key] == pytest.approx(trained[key], abs=1e-6, nan_ok=True)
    out = Path(cfg.paths.run_dir)
    assert json.loads((out / "metrics.json").read_text()).keys() == results.keys()
    assert (out / "pdj_curve.png").stat().st_size > 5000
    assert (out / "skeletons_stage1.png").stat().st_size > 5000


# ---- stage 2 ---------------------------------------------------------------------------------------


def test_stage2_checkpoint_knows_its_parent_and_error_statistics(runs: dict[str, Path]) -> None:
    ckpt = runs["stage2"] / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hp = state["hyper_parameters"]
    assert hp["stage"] == 2
    assert hp["parent_ckpts"] == [str((runs["stage1"] / "checkpoints" / "best.ckpt").resolve())]
    assert not any(k.startswith("parents") for k in state["state_dict"])  # parents stay in their own files
    cov = state["state_dict"]["err_cov"]
    assert cov.shape == (14, 2, 2) and not torch.allclose(cov, torch.eye(2) * 0.01)
    module = PoseTask.load_from_checkpoint(ckpt, weights_only=True, load_pretrained=False)
    assert [p.stage for p in module.parents] == [1] and module.stage == 2
    assert not any(p.requires_grad for p in module.parents[0].net.parameters())
    tags = _tb_tags(runs["stage2"])
    assert {"val/refiner_crops", "val/skeletons", "val/pdj_curve"} <= set(tags["images"])
    assert {"train/loss", "val/pcp/mean"} <= set(tags["scalars"])
    assert not any(t.startswith("test/") for t in tags["scalars"])  # test values: HPARAMS, metrics.json
    summary = hparams_scalars(runs["stage2"])
    assert "test/pcp/mean" in summary  # the last stage once, as test/*
    assert not any(t.startswith("test/stage2/") for t in summary)


def test_chain_evaluation_reports_each_stage_side_by_side(
    runs: dict[str, Path], data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    stage1 = json.loads((runs["stage1"] / "metrics.json").read_text())
    stage2 = json.loads((runs["stage2"] / "metrics.json").read_text())
    cfg = _cfg(data_dir, runs["outputs"], "eval2", f"ckpt_path={runs['stage2'] / 'checkpoints' / 'best.ckpt'}",
               name="evaluate")  # fmt: skip
    results = evaluate(cfg)
    for key in ("pcp/mean", "pcp/upper_legs", "pdj@0.2", "pdj@0.5/neck"):
        # stage 1 inside the chain = the stage-1 run alone; stage 2 = the stage-2 run's own test
        assert results[f"test/stage1/{key}"] == pytest.approx(stage1[f"test/{key}"], abs=1e-6, nan_ok=True)
        assert results[f"test/stage2/{key}"] == pytest.approx(stage2[f"test/{key}"], abs=1e-6, nan_ok=True)
        assert results[f"test/{key}"] == results[f"test/stage2/{key}"]
    printed = capsys.readouterr().out
    assert "stage 1" in printed and "stage 2" in printed and "PDJ@0.2 per joint" in printed
    assert any(line.startswith("upper_arms") and len(line.split()) == 3 for line in printed.splitlines())
    out = Path(cfg.paths.run_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert "test/stage1/pcp/mean" in saved and "test/stage2/pcp/mean" in saved
    for name in ("pdj_curve.png", "skeletons_stage1.png", "skeletons_stage2.png", "refiner_crops_stage2.png"):
        assert (out / name).stat().st_size > 5000, name


def test_stage2_discovers_the_newest_finished_stage1_run_on_the_same_data(
    runs: dict[str, Path], data_dir: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    outputs = runs["outputs"]
    info = _data_info(runs["stage1"])
    good = runs["stage1"] / "checkpoints" / "best.ckpt"
    # decoys, all newer: an unfinished stage-1 run, and a finished one on other data
    unfinished = outputs / "pose" / "unfinished" / "checkpoints"
    unfinished.mkdir(parents=True)
    shutil.copy(good, unfinished / "best.ckpt")
    other = outputs / "pose" / "other_data"
    (other / "checkpoints").mkdir(parents=True)
    state = torch.load(good, map_location="cpu", weights_only=True)
    state["hyper_parameters"]["data_info"]["root"] = "/elsewhere"
    torch.save(state, other / "checkpoints" / "best.ckpt")
    time.sleep(0.01)
    (other / "metrics.json").write_text("{}")
    module = PoseTask.from_config(_cfg(data_dir, outputs, "discover", "stage=2"), info)
    assert module.hparams.parent_ckpts == [str(good.resolve())]
    assert f"using the stage-1 checkpoint {good.resolve()}" in capsys.readouterr().out
    # stage 3 finds the stage-2 run and inherits its parent
    module3 = PoseTask.from_config(_cfg(data_dir, outputs, "discover3", "stage=3"), info)
    assert module3.hparams.parent_ckpts == [
        str(good.resolve()), str((runs["stage2"] / "checkpoints" / "best.ckpt").resolve())
    ]  # fmt: skip
    assert [p.stage for p in module3.parents] == [1, 2]
    # resuming a stage-2 run keeps the parents stored in its checkpoint, with no discovery
    stage2 = runs["stage2"] / "checkpoints" / "last.ckpt"
    resumed = PoseTask.from_config(_cfg(data_dir, tmp_path, "resume", "stage=2", f"ckpt_path={stage2}"), info)
    assert resumed.hparams.parent_ckpts == [str(good.resolve())]


def test_missing_previous_stage_is_a_clear_error(
    runs: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    info = _data_info(runs["stage1"])
    with pytest.raises(ConfigError, match=r"stage=2 needs a stage-1 checkpoint.*prev_ckpt="):
        PoseTask.from_config(_cfg(data_dir, tmp_path / "empty", "r", "stage=2"), info)
    with pytest.raises(ConfigError, match=r"stage=4 needs a stage-3 checkpoint"):
        PoseTask.from_config(_cfg(data_dir, runs["outputs"], "r", "stage=4"), info)
    with pytest.raises(ConfigError, match=r"prev_ckpt=.*nothing\.ckpt is not a file"):
        PoseTask.from_config(
            _cfg(data_dir, tmp_path, "r", "stage=2", f"prev_ckpt={tmp_path / 'nothing.ckpt'}"), info
        )
    stage2 = runs["stage2"] / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match="stage-2 checkpoint; stage=2 needs a stage-1 one"):
        PoseTask.from_config(_cfg(data_dir, tmp_path, "r", "stage=2", f"prev_ckpt={stage2}"), info)
    with pytest.raises(ConfigError, match="stage=0"):
        PoseTask.from_config(_cfg(data_dir, tmp_path, "r", "stage=0"), info)


def test_a_moved_parent_checkpoint_is_named(runs: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(runs["stage2"] / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    state["hyper_parameters"]["parent_ckpts"] = [str(tmp_path / "gone.ckpt")]
    torch.save(state, tmp_path / "child.ckpt")
    with pytest.raises(ConfigError, match=r"gone\.ckpt \(stage 1 of this cascade\) is missing"):
        PoseTask.load_from_checkpoint(tmp_path / "child.ckpt", weights_only=True, load_pretrained=False)


def _data_info(run: Path) -> dict:
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True, mmap=True)
    return state["hyper_parameters"]["data_info"]


def _tb_tags(run: Path) -> dict[str, list[str]]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc.Tags()
