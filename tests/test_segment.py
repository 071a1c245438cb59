"""`segment` end to end on the embedded VOC-layout set: training, TensorBoard content, evaluation parity,
side-by-side comparison, the freeze-then-unfreeze schedule (and resuming after it), frozen BatchNorm,
joint augmentation, class remapping from config, and clear bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from scipy import ndimage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.synthetic.voc import CLASS_NAMES
from datamodules.voc import VOCDataModule, build_pair_augment
from tasks.segment import SegmentTask
from tests.conftest import QUIET_CPU, assert_curves_only, hparams_scalars, with_old_model_keys
from visionlab.errors import ConfigError, DataError
from visionlab.runner import build_datamodule, build_trainer, evaluate, train

#: 24 scenes of 64 px (18 train, 6 val) loaded at 32 px, a narrow decoder: about a second per epoch
TINY_SEGMENT = [
    "task=segment",
    "data.synthetic={num_images: 24, size: 64, seed: 0, val_fraction: 0.25}",
    "data.image_size=32",
    "data.batch_size=6",
    "data.num_workers=0",
    "model.encoder_stages=4",
    "model.decoder_channels=[32,16,16,8,8]",
    *QUIET_CPU,
]
#: the shared run: encoder frozen in epoch 0, trained at half the head's lr in epoch 1 (a constant lr:
#: a cosine schedule ends at lr 0, so a resumed run would not move the weights in its first epoch)
FREEZE = ["model.freeze_backbone_epochs=1", "model.backbone_lr_ratio=0.5", "scheduler=none"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while these tests run: on a 2-core machine shared with other test processes,
    two OpenMP threads per process wait on each other and a step can take 30x longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("segment_trained")
    cfg = compose_config(
        "train", [*TINY_SEGMENT, *FREEZE, f"paths.data_dir={data_dir}", f"paths.run_dir={run}"]
    )
    train(cfg)
    return run


def _eval_base() -> list[str]:
    return [b for b in TINY_SEGMENT if "max_epochs" not in b]


def _encoder(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state["state_dict"].items() if k.startswith("net.encoder.")}


# ---- run folder, TensorBoard, evaluation ----------------------------------------------------------


def test_run_folder_holds_checkpoints_metrics_and_per_class_iou(trained: Path) -> None:
    assert (trained / "checkpoints" / "best.ckpt").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test/miou"] <= 1.0 and 0.0 <= metrics["test/pixel_acc"] <= 1.0
    assert "test/iou/background" in metrics and "best/val/miou" in metrics
    present = [v for k, v in metrics.items() if k.startswith("test/iou/")]
    assert metrics["test/miou"] == pytest.approx(np.mean(present), abs=1e-6)  # mean over present classes


def test_tensorboard_has_loss_miou_per_class_iou_and_overlays(trained: Path) -> None:
    acc = EventAccumulator(str(trained / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "val/loss", "val/miou", "val/pixel_acc", "val/iou/background"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert_curves_only(acc)
    assert {"val/miou", "test/miou", "test/pixel_acc"} <= hparams_scalars(trained)
    assert len(acc.Scalars("val/miou")) == 2 and len(acc.Scalars("train/loss")) == 2  # once per epoch
    images = set(acc.Tags()["images"])
    assert {"val/overlays", "val/confusion_matrix", "test/overlays", "test/confusion_matrix"} <= images
    assert len(acc.Images("val/overlays")) == 2


def test_evaluate_reproduces_training_numbers_and_prints_reference_format(
    trained: Path, make_cfg, capsys: pytest.CaptureFixture[str]
) -> None:
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    cfg = make_cfg(f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", name="evaluate", base=_eval_base())
    results = evaluate(cfg)
    for key in ("test/miou", "test/pixel_acc", "test/iou/background"):
        assert results[key] == pytest.approx(trained_metrics[key], abs=1e-6)
    out = capsys.readouterr().out
    assert "class #0 (background): " in out and f"class #8 ({CLASS_NAMES[8]}): " in out
    assert f"mean_iou: {results['test/miou']:.4f}" in out
    run = Path(cfg.paths.run_dir)
    assert json.loads((run / "metrics.json").read_text())["test/miou"] == results["test/miou"]
    assert (run / "confusion_matrix.png").stat().st_size > 1000
    assert (run / "overlays.png").stat().st_size > 1000
    rows = (run / "confusion_matrix.csv").read_text().splitlines()
    assert len(rows) == 1 + len(CLASS_NAMES) and rows[1].startswith("background,")


def test_a_checkpoint_with_the_old_encoder_keys_evaluates_the_same(
    trained: Path, make_cfg, tmp_path: Path
) -> None:
    """Written before `model.backbone` / `model.freeze_backbone_epochs`: `encoder`, `freeze_encoder_epochs`
    and `encoder_lr_ratio` in its hparams, and no `arch`."""
    old = {"encoder": "resnet18", "freeze_encoder_epochs": 1, "encoder_lr_ratio": 0.5}
    drop = ("arch", "backbone", "freeze_backbone_epochs", "backbone_lr_ratio")
    ckpt = with_old_model_keys(trained / "checkpoints" / "best.ckpt", tmp_path / "old.ckpt", old, drop)
    results = evaluate(make_cfg(f"ckpt_path={ckpt}", name="evaluate", base=_eval_base()))
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    assert results["test/miou"] == pytest.approx(trained_metrics["test/miou"], abs=1e-6)


def test_compare_ckpt_prints_both_models_side_by_side(
    trained: Path, make_cfg, capsys: pytest.CaptureFixture[str]
) -> None:
    best, last = trained / "checkpoints" / "best.ckpt", trained / "checkpoints" / "last.ckpt"
    cfg = make_cfg(f"ckpt_path={last}", f"compare_ckpt={best}", name="evaluate", base=_eval_base())
    results = evaluate(cfg)
    out = capsys.readouterr().out
    assert "side by side" in out and str(best) in out and str(last) in out
    assert "class #0 (background):" in out.split("side by side")[1]
    assert "compare/miou" in results and "compare/iou/background" in results
    saved = json.loads((Path(cfg.paths.run_dir) / "metrics.json").read_text())
    assert saved["compare/miou"] == results["compare/miou"]
    alone = json.loads((trained / "metrics.json").read_text())  # the training run tested best.ckpt
    assert results["compare/miou"] == pytest.approx(alone["test/miou"], abs=1e-6)
    assert (Path(cfg.paths.run_dir) / "compare_confusion_matrix.png").is_file()

    with pytest.raises(ConfigError, match=r"compare_ckpt=.*is not a file"):
        evaluate(
            make_cfg(f"ckpt_path={best}", "compare_ckpt=/nowhere.ckpt", name="evaluate", base=_eval_base())
        )


def test_checkpoint_loads_with_weights_only(trained: Path) -> None:
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["task_name"] == "segment"
    assert state["hyper_parameters"]["data_info"]["class_names"] == list(CLASS_NAMES)
    module = SegmentTask.load_from_checkpoint(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert module.class_names == list(CLASS_NAMES) and module.net.head[1].out_channels == 9


# ---- freeze-then-unfreeze ------------------------------------------------------------------------


class EncoderRecorder(Callback):
    """Per epoch: the encoder's state after the epoch, and its modes/grad flags during the first batch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.modes: list[tuple[bool, bool, bool]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            enc = module.net.encoder
            self.modes.append((enc.bn1.training, enc.layer4[0].bn2.training, enc.conv1.weight.requires_grad))

    def on_train_epoch_end(self, trainer, module) -> None:
        self.states.append({k: v.detach().clone() for k, v in module.net.encoder.state_dict().items()})


def test_frozen_encoder_keeps_weights_and_batchnorm_then_trains(make_cfg) -> None:
    cfg = make_cfg(
        *FREEZE,
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "+trainer.num_sanity_val_steps=0",
        base=TINY_SEGMENT,
    )
    dm = build_datamodule(cfg)
    module = SegmentTask.from_config(cfg, dm.info())
    initial = {k: v.clone() for k, v in module.net.encoder.state_dict().items()}
    decoder_before = module.net.decoder[0][1].running_mean.clone()
    recorder = EncoderRecorder()
    build_trainer(cfg, [recorder], False).fit(module, datamodule=dm)
    frozen, unfrozen = recorder.states
    assert all(torch.equal(initial[k], frozen[k]) for k in initial)  # weights and BN statistics
    assert not torch.equal(decoder_before, module.net.decoder[0][1].running_mean)  # the decoder trained
    assert recorder.modes[0] == (False, False, False)  # epoch 0: BN in eval mode, no gradients
    assert recorder.modes[1] == (True, True, True)  # epoch 1: everything trains, BN included
    for key in ("conv1.weight", "bn1.running_mean", "layer4.1.bn2.running_var"):
        assert not torch.equal(frozen[key], unfrozen[key]), key


def test_encoder_learns_at_the_configured_ratio(trained: Path) -> None:
    state = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    groups = {g["name"]: g["lr"] for g in state["optimizer_states"][0]["param_groups"]}
    assert groups["backbone"] == pytest.approx(0.5 * groups["head"])


def test_resume_after_the_unfreeze_epoch_keeps_training_the_encoder(trained: Path, make_cfg) -> None:
    before = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert before["epoch"] == 1  # epoch 0 frozen, epoch 1 unfrozen
    cfg = make_cfg(
        *FREEZE,
        f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_epochs=3",
        "run_test=false",
        base=TINY_SEGMENT,
    )
    train(cfg)
    after = torch.load(Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["epoch"] == 2
    enc_before, enc_after = _encoder(before), _encoder(after)
    for key in (
        "net.encoder.conv1.weight",
        "net.encoder.layer3.0.conv1.weight",
        "net.encoder.bn1.running_mean",
    ):
        assert not torch.equal(enc_before[key], enc_after[key]), f"{key} did not change after resume"
    module = SegmentTask.from_config(cfg, before["hyper_parameters"]["data_info"])
    assert module.backbone_frozen(epoch=0) and not module.backbone_frozen(epoch=2)


# ---- data ----------------------------------------------------------------------------------------

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.uint8)


def _coded_sample() -> tuple[np.ndarray, np.ndarray]:
    """A mask of four class blocks and an image whose colour encodes the class of each pixel."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    mask[32:, :32] = 2
    mask[40:56, 40:56] = 3
    return COLOURS[mask], mask


def _check_aligned(image: np.ndarray, mask: np.ndarray, margin: int) -> None:
    """Pixels `margin` px inside each mask region (edges blend under bilinear interpolation) have the
    region's colour: a mask shifted by more than `margin` px against its image fails."""
    for k, colour in enumerate(COLOURS):
        inner = ndimage.binary_erosion(mask == k, np.ones((2 * margin + 1,) * 2, bool))
        pixels = image[inner].astype(int)
        if len(pixels) > 20:
            close = (np.abs(pixels - colour).max(axis=1) < 30).mean()
            assert close > 0.98, f"class {k}: only {close:.2f} of its mask pixels have its colour"
    black = image.max(axis=-1) < 5
    if black.sum() > 20:
        assert (mask[black] == 255).mean() > 0.9  # filled areas are void


def test_rotation_fills_the_mask_with_void_even_when_not_configured() -> None:
    torch.manual_seed(0)  # SeededAugment seeds Albumentations from torch's seed
    augment = build_pair_augment([{"name": "Rotate", "limit": [30, 30], "p": 1.0}])
    image, mask = _coded_sample()
    out = augment(image=image, mask=mask)
    assert out["mask"][0, 0] == 255 and out["mask"][-1, -1] == 255 and out["image"][0, 0].max() == 0
    assert set(np.unique(out["mask"]).tolist()) <= {0, 1, 2, 3, 255}  # nearest neighbour: no new values
    _check_aligned(out["image"], out["mask"], margin=1)


def test_default_augmentation_keeps_image_and_mask_aligned(make_cfg) -> None:
    from omegaconf import OmegaConf

    # the heavy pipeline of the GPU reference recipe (the CPU task default is a flip only)
    cfg = make_cfg("experiment=segment_fcn_improved", "data.image_size=64", base=TINY_SEGMENT)
    specs = OmegaConf.to_container(cfg.data.augment, resolve=True)
    names = [s["name"] for s in specs]
    assert {"Affine", "RandomResizedCrop", "HorizontalFlip", "ColorJitter"} <= set(names)
    affine = specs[names.index("Affine")]
    assert affine["rotate"] == [-30, 30] and affine["fill_mask"] == 255
    torch.manual_seed(0)
    augment = build_pair_augment([s for s in specs if s["name"] != "ColorJitter"])
    image, mask = _coded_sample()
    filled = 0
    for _ in range(15):
        out = augment(image=image, mask=mask)
        assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
        assert set(np.unique(out["mask"]).tolist()) <= {0, 1, 2, 3, 255}
        _check_aligned(out["image"], out["mask"], margin=2)  # zoom up to ~1.8x widens the blend
        filled += int((out["mask"] == 255).any())
    assert filled > 0


def test_keep_classes_and_remap_from_config(make_cfg) -> None:
    keep = make_cfg("data.keep_classes=[background,disc,square]", base=TINY_SEGMENT)
    dm = build_datamodule(keep)
    assert dm.info()["class_names"] == ["background", "disc", "square"]
    values = set()
    for i in range(len(dm.datasets["val"])):
        values |= set(np.unique(dm.datasets["val"][i][1].numpy()).tolist())
    assert values <= {0, 1, 2, 255} and 255 in values
    assert SegmentTask.from_config(keep, dm.info()).net.head[1].out_channels == 3

    merged = make_cfg(
        "data.remap={1: 1, 2: 1}", "data.class_names=[background,disc_or_square]", "data.unlisted=background",
        base=TINY_SEGMENT,
    )  # fmt: skip
    dm = build_datamodule(merged)
    assert dm.info()["num_classes"] == 2
    assert set(np.unique(dm.datasets["train"][0][1].numpy()).tolist()) <= {0, 1, 255}


def test_test_split_defaults_to_the_val_list(make_cfg) -> None:
    dm = build_datamodule(make_cfg(base=TINY_SEGMENT))
    assert dm.datasets["test"].source.ids == dm.datasets["val"].source.ids and len(dm.datasets["val"]) == 6


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (["data.keep_classes=[background,unicorn]"], ConfigError, "unknown class names"),
        (["data.remap={1: 1}"], ConfigError, "data.remap needs data.class_names"),
        (["data.remap={1: 1}", "data.keep_classes=[disc]"], ConfigError, "alternatives"),
        (["data.unlisted=ignore"], ConfigError, r"data.unlisted='ignore'"),
        (["data.resize=crop"], ConfigError, r"data.resize='crop'"),
        (["data.val_split=nope"], DataError, r"nope\.txt: split list not found"),
        (["data.root=/nowhere/voc"], DataError, "does not exist"),
        (["model.backbone=vgg16"], ConfigError, r"model.backbone='vgg16'"),
        (["model.num_classes=4"], ConfigError, r"model.num_classes=4 but the data has 9"),
        (["model.freeze_backbone_epochs=-1"], ConfigError, "freeze_backbone_epochs"),
        (["model.skips=9"], ConfigError, r"model.skips=9: expected an integer from 0 to"),
        (["model.weights=IMAGENET1K_V1"], ConfigError, "nothing is downloaded"),
        (["data.augment=[{name: Spin}]"], ConfigError, r"data.augment\[0\].name='Spin'"),
    ],
)
def test_bad_config_is_a_clear_error(make_cfg, overrides: list[str], error: type, match: str) -> None:
    cfg = make_cfg(*overrides, base=TINY_SEGMENT)
    with pytest.raises(error, match=match):
        SegmentTask.from_config(cfg, build_datamodule(cfg).info())


def test_augmentation_that_changes_the_size_is_named(make_cfg) -> None:
    cfg = make_cfg("data.augment=[{name: RandomCrop, height: 16, width: 16}]", base=TINY_SEGMENT)
    with pytest.raises(ConfigError, match=r"data\.augment turns 32x32 samples into 16x16"):
        build_datamodule(cfg).datasets["train"][0]


def test_datamodule_rejects_bad_values_directly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size=0"):
        VOCDataModule(str(tmp_path), batch_size=0)
    with pytest.raises(ConfigError, match=r"data\.cache_images"):
        VOCDataModule(str(tmp_path), cache_images="sometimes")


# ---- model and metric options used by the task ----------------------------------------------------


def test_decoder_without_batchnorm_and_dropout_follow_the_model_config(make_cfg) -> None:
    cfg = make_cfg("model.decoder_batch_norm=false", "model.dropout=0.3", base=TINY_SEGMENT)
    net = SegmentTask.from_config(cfg, {"class_names": list(CLASS_NAMES)}).net
    assert all(block[0].bias is not None and isinstance(block[1], torch.nn.Identity) for block in net.decoder)
    assert isinstance(net.head[0], torch.nn.Dropout2d) and net.head[0].p == 0.3


def test_unchecked_metric_update_counts_like_the_checked_one() -> None:
    from tasks.metrics.segmentation import SegmentationScores

    target = torch.randint(0, 4, (2, 8, 8))
    target[:, :2] = 255
    preds = torch.randint(0, 4, (2, 8, 8))
    checked, fast = SegmentationScores(4), SegmentationScores(4, validate_args=False)
    checked.update(preds, target)
    fast.update(preds, target)
    assert torch.equal(checked.compute()["confusion_matrix"], fast.compute()["confusion_matrix"])
    assert int(fast.compute()["confusion_matrix"].sum()) == 2 * 6 * 8
