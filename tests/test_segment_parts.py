"""Fast tests of the segment task's Lightning-free parts: VOC reader, generator, FCN, metric."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import nn
from torchvision import models

from datamodules.synthetic.voc import CLASS_NAMES, generate_voc
from datamodules.voc_format import (
    VOC_CLASS_NAMES,
    VOC_PALETTE,
    VOCSegmentation,
    build_remap_lut,
    read_split_ids,
    subset_remap,
)
from tasks.metrics.segmentation import SegmentationScores, format_iou_report
from tasks.nets.fcn import FCN, init_bilinear_
from tasks.nets.weights import load_state_dict_file
from visionlab.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "voc"
    generate_voc(root, num_images=10, size=64, seed=3)
    return root


@pytest.fixture
def voc_copy(voc_root: Path, tmp_path: Path) -> Path:
    """A private copy a test may damage."""
    return Path(shutil.copytree(voc_root, tmp_path / "voc"))


# --- generator and reader -------------------------------------------------------------------------


def test_generator_writes_voc_layout_that_reads_back(voc_root: Path) -> None:
    train, val = read_split_ids(voc_root, "train"), read_split_ids(voc_root, "val")
    assert (len(train), len(val)) == (8, 2) and not set(train) & set(val)
    assert sorted(train + val) == read_split_ids(voc_root, "trainval")
    with Image.open(voc_root / "SegmentationClass" / f"{train[0]}.png") as mask:
        assert mask.mode == "P"
        assert np.array_equal(np.array(mask.getpalette()).reshape(-1, 3)[:256], VOC_PALETTE)
    dataset = VOCSegmentation(voc_root, "train", class_names=CLASS_NAMES)
    values = set()
    for image, mask in (dataset[i] for i in range(len(dataset))):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        values |= set(np.unique(mask).tolist())
    assert 0 in values and 255 in values and len(values - {0, 255}) >= 3
    assert values <= set(range(len(CLASS_NAMES))) | {255}


def test_generator_is_deterministic_and_draws_void_borders(voc_root: Path, tmp_path: Path) -> None:
    generate_voc(tmp_path / "again", num_images=10, size=64, seed=3)
    for sub in ("SegmentationClass/synth_00004.png", "ImageSets/Segmentation/val.txt"):
        assert (voc_root / sub).read_bytes() == (tmp_path / "again" / sub).read_bytes()
    _, mask = VOCSegmentation(voc_root, "trainval", class_names=CLASS_NAMES)[0]
    objects = (mask != 0) & (mask != 255)
    assert objects.any() and (mask == 255).any()
    # a void band separates objects from the background: no object pixel touches a background pixel
    assert not np.any(objects & ndimage.binary_dilation(mask == 0, np.ones((3, 3), bool)))


def test_remap_keeps_a_subset_and_voids_or_backgrounds_the_rest(voc_root: Path) -> None:
    full = VOCSegmentation(voc_root, "train", class_names=CLASS_NAMES)
    keep = ["background", "disc", "square"]
    remap = subset_remap(CLASS_NAMES, keep)
    assert remap == {0: 0, 1: 1, 2: 2}
    voided = VOCSegmentation(voc_root, "train", class_names=keep, remap=remap, unlisted="void")
    backgrounded = VOCSegmentation(voc_root, "train", class_names=keep, remap=remap, unlisted="background")
    for i in range(len(full)):
        original, as_void, as_background = full[i][1], voided[i][1], backgrounded[i][1]
        dropped = original >= 3
        assert np.all(as_void[dropped] == 255) and np.all(as_background[dropped & (original != 255)] == 0)
        assert np.array_equal(as_void[~dropped], original[~dropped])
        assert np.all(as_background[original == 255] == 255)


def test_remap_lut_and_voc_constants() -> None:
    lut = build_remap_lut({15: 1, "8": 2}, unlisted="background")
    assert (lut[15], lut[8], lut[3], lut[255]) == (1, 2, 0, 255)
    assert np.array_equal(build_remap_lut(None), np.arange(256))
    assert subset_remap(VOC_CLASS_NAMES, ["background", "cat", "dog"]) == {0: 0, 8: 1, 12: 2}
    assert len(VOC_CLASS_NAMES) == 21 and VOC_CLASS_NAMES[15] == "person"
    assert VOC_PALETTE[[0, 1, 15, 255]].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]
    with pytest.raises(ConfigError, match="unknown class names"):
        subset_remap(VOC_CLASS_NAMES, ["unicorn"])


@pytest.mark.parametrize("entry", ["../outside", "/etc/passwd", "sub/../../x"])
def test_list_entry_escaping_root_names_the_list_file(voc_copy: Path, entry: str) -> None:
    list_file = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    list_file.write_text(list_file.read_text() + entry + "\n")
    with pytest.raises(DataError, match=r"train\.txt, line 9.*outside the dataset"):
        VOCSegmentation(voc_copy, "train", class_names=CLASS_NAMES)


def test_missing_list_image_or_mask_names_the_file(voc_copy: Path) -> None:
    with pytest.raises(DataError, match=r"test\.txt: split list not found.*'train'"):
        VOCSegmentation(voc_copy, "test")
    sample_id = read_split_ids(voc_copy, "val")[0]
    (voc_copy / "SegmentationClass" / f"{sample_id}.png").unlink()
    with pytest.raises(DataError, match=rf"{sample_id}\.png: file not found.*val\.txt"):
        VOCSegmentation(voc_copy, "val", class_names=CLASS_NAMES)
    (voc_copy / "JPEGImages" / f"{sample_id}.jpg").unlink()
    with pytest.raises(DataError, match=rf"{sample_id}\.jpg: file not found"):
        VOCSegmentation(voc_copy, "val", class_names=CLASS_NAMES)


def test_bad_mask_size_or_values_name_the_mask(voc_copy: Path) -> None:
    dataset = VOCSegmentation(voc_copy, "val", class_names=CLASS_NAMES)
    Image.fromarray(np.zeros((32, 64), np.uint8), "L").save(dataset.mask_path(dataset.ids[0]))
    with pytest.raises(DataError, match=rf"{dataset.ids[0]}\.png: mask is 64x32 but its image .* is 64x64"):
        dataset[0]
    too_few = VOCSegmentation(voc_copy, "train", class_names=["background", "disc"])
    with pytest.raises(DataError, match=r"\.png: label values \[.*\] \(after remap\) are not classes 0..1"):
        for i in range(len(too_few)):
            too_few[i]
    with pytest.raises(ConfigError, match=r"maps to \[5\]"):
        VOCSegmentation(voc_copy, "train", class_names=["a", "b"], remap={1: 5})


# --- FCN ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoder", "decoder", "size"),
    [("resnet18", (256, 128, 64, 32, 16), (64, 96)), ("resnet34", (64, 32, 16), (70, 50)),
     ("resnet50", (128, 64, 32, 32, 16), (32, 32))],
)  # fmt: skip
def test_fcn_output_has_input_resolution(
    encoder: str, decoder: tuple[int, ...], size: tuple[int, int]
) -> None:
    model = FCN(num_classes=9, encoder=encoder, decoder_channels=decoder, dropout=0.1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 9, *size)
    assert len(model.decoder) == len(decoder) and isinstance(model.head[0], nn.Dropout2d)
    assert model.head[1].bias is not None and all(block[0].bias is None for block in model.decoder)


def test_fcn_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match=r"model\.backbone='vgg16'"):
        FCN(encoder="vgg16")
    with pytest.raises(ConfigError, match="decoder_channels"):
        FCN(decoder_channels=(64,) * 6)


def test_bilinear_init_upsamples_ramp_and_constant() -> None:
    conv = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1, bias=False)
    init_bilinear_(conv)
    ramp = torch.arange(8.0).repeat(8, 1)  # x-ramp
    x = torch.stack([ramp, torch.full((8, 8), 3.0)])[None]
    with torch.no_grad():
        out = conv(x)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert out.shape == (1, 2, 16, 16)
    assert torch.allclose(out[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1])  # zero padding shows at the rim
    assert torch.allclose(out[0, 1, 1:-1, 1:-1], torch.tensor(3.0))
    assert torch.allclose(out[0, 0, 5, 1:-1], torch.arange(1, 15) / 2 - 0.25)

    reduce = nn.ConvTranspose2d(4, 2, kernel_size=4, stride=2, padding=1, bias=False)
    init_bilinear_(reduce)
    with torch.no_grad():
        out = reduce(torch.tensor([1.0, 3.0, 10.0, 20.0])[None, :, None, None].expand(1, 4, 6, 6))
    assert torch.allclose(out[0, :, 2:-2, 2:-2], torch.tensor([2.0, 15.0])[:, None, None].expand(2, 8, 8))


def test_frozen_encoder_keeps_batchnorm_stats_and_weights() -> None:
    """The freeze schedule segment trains with (`model.freeze_backbone_epochs`, TaskModule's)."""
    from tasks.segment import SegmentTask

    torch.manual_seed(0)
    model = {"decoder_channels": [32, 16, 16, 8, 8], "num_classes": 3, "freeze_backbone_epochs": 1}
    task = SegmentTask(model=model, optimizer={"lr": 0.1})
    task.apply_freeze()  # epoch 0 < 1: frozen
    task.train()
    fcn = task.net
    norms = [m for m in fcn.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert fcn.training and norms and not any(m.training for m in norms)
    before = {k: v.clone() for k, v in fcn.encoder.state_dict().items()}
    decoder_bn_before = fcn.decoder[0][1].running_mean.clone()
    optimizer = torch.optim.SGD([p for p in fcn.parameters() if p.requires_grad], lr=0.1)
    loss = F.cross_entropy(fcn(torch.randn(2, 3, 64, 64) * 3 + 1), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in fcn.encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in fcn.encoder.state_dict().items())
    assert not torch.equal(decoder_bn_before, fcn.decoder[0][1].running_mean)
    task.hparams.model["freeze_backbone_epochs"] = 0  # as from epoch 1 on
    task.apply_freeze()
    assert all(m.training for m in norms) and all(p.requires_grad for p in fcn.encoder.parameters())
    fcn(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before["bn1.running_mean"], fcn.encoder.bn1.running_mean)


def test_encoder_loads_a_torchvision_resnet_state_dict(tmp_path: Path) -> None:
    reference = models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = FCN(encoder="resnet18")
    load_state_dict_file(model.encoder, tmp_path / "resnet18.pth", skip_prefixes=("fc.",))
    assert model.encoder_backbone_name == "resnet18"
    assert torch.equal(model.encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)


# --- metric ---------------------------------------------------------------------------------------

# 4 classes; class 3 is predicted only on void pixels, so it is absent. Non-void (target, pred) pairs:
# (0,0) (0,0) (0,1) (1,1) (1,2) (2,2) -> IoU 0: 2/3, 1: 1/3, 2: 1/2, 3: NaN; mIoU 1/2; accuracy 4/6.
TARGET = torch.tensor([[[0, 0, 0, 255], [1, 1, 2, 255]]])
PREDS = torch.tensor([[[0, 0, 1, 3], [1, 2, 2, 3]]])


def test_metric_hand_case_with_void_and_absent_class() -> None:
    metric = SegmentationScores(4, class_names=["bg", "a", "b", "c"])
    metric.update(F.one_hot(PREDS, 4).permute(0, 3, 1, 2).float(), TARGET)  # logits are argmaxed
    scores = metric.compute()
    iou = scores["iou"].tolist()
    assert iou[:3] == pytest.approx([2 / 3, 1 / 3, 1 / 2]) and math.isnan(iou[3])
    assert scores["miou"].item() == pytest.approx(0.5)
    assert scores["pixel_accuracy"].item() == pytest.approx(4 / 6)
    assert scores["confusion_matrix"].tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    named = metric.named_scores(scores)
    assert named["iou/a"] == pytest.approx(1 / 3) and math.isnan(named["iou/c"])
    report = format_iou_report(iou, metric.class_names, scores["miou"].item())
    assert report.splitlines()[1] == "class #1 (a): 0.3333" and report.endswith("mean_iou: 0.5000")


def test_metric_accumulates_and_counts_prediction_only_classes() -> None:
    metric = SegmentationScores(4)
    metric.update(PREDS[:, :1], TARGET[:, :1])
    metric.update(PREDS[:, 1:], TARGET[:, 1:])
    assert metric.compute()["miou"].item() == pytest.approx(0.5)
    metric.reset()
    metric.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 0, 0]]))  # class 1 only predicted
    scores = metric.compute()
    assert scores["iou"][:2].tolist() == [0.5, 0.0] and scores["miou"].item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"target labels must be 0\.\.3"):
        metric.update(torch.tensor([[0]]), torch.tensor([[7]]))


# --- encoder depth and the Dice loss --------------------------------------------------------------


@pytest.mark.parametrize(("stages", "decoder", "stride"), [(3, (32, 16, 16, 8), 16), (2, (16, 8), 8)])
def test_truncated_encoder_has_the_stride_and_loads_a_full_resnet(
    tmp_path: Path, stages: int, decoder: tuple[int, ...], stride: int
) -> None:
    model = FCN(num_classes=4, encoder_stages=stages, decoder_channels=decoder).eval()
    assert model.stride == stride and not hasattr(model.encoder, "layer4")
    assert model.encoder(torch.zeros(1, 3, 64, 64)).shape[-1] == 64 // stride
    assert model(torch.zeros(1, 3, 50, 70)).shape == (1, 4, 50, 70)
    reference = models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    skip = ("fc.", *model.encoder.dropped_prefixes)
    load_state_dict_file(model.encoder, tmp_path / "resnet18.pth", skip_prefixes=skip)
    assert torch.equal(model.encoder.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    with pytest.raises(ConfigError, match="decoder_channels"):
        FCN(encoder_stages=stages, decoder_channels=(8,) * (stride.bit_length()))
    with pytest.raises(ConfigError, match="encoder_stages"):
        FCN(encoder_stages=5)


def test_skips_start_as_the_plain_network_and_carry_fine_features() -> None:
    """Skip projections start at zero (the same logits as without them), learn from the fine encoder
    maps, and are bounded by the decoder blocks that land on an encoder stride."""
    torch.manual_seed(0)
    plain = FCN(num_classes=4, encoder_stages=2, decoder_channels=(16, 8, 8)).eval()
    skipped = FCN(num_classes=4, encoder_stages=2, decoder_channels=(16, 8, 8), skips=2).eval()
    assert [tuple(p.weight.shape) for p in skipped.skips] == [(16, 64, 1, 1), (8, 64, 1, 1)]
    skipped.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 48, 40)
    assert torch.equal(plain(x), skipped(x))
    skipped(x).square().mean().backward()
    assert all(p.weight.grad.abs().sum() > 0 for p in skipped.skips)
    with pytest.raises(ConfigError, match=r"model.skips=3: expected an integer from 0 to 2"):
        FCN(encoder_stages=2, decoder_channels=(16, 8, 8), skips=3)


def test_soft_dice_loss_on_known_cases() -> None:
    from tasks.segment import soft_dice_loss

    target = torch.tensor([[[0, 0], [1, 255]]])
    perfect = F.one_hot(torch.tensor([[[0, 0], [1, 0]]]), 3).permute(0, 3, 1, 2).float() * 100.0
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # uniform probabilities over 3 classes: class 0 has |P.T| = 2/3, |P| + |T| = 1 + 2 (void dropped);
    # class 1: 1/3 and 1 + 1; class 2 is absent from the ground truth and left out of the mean
    uniform = torch.zeros(1, 3, 2, 2)
    expected = 1 - ((2 * 2 / 3) / 3 + (2 * 1 / 3) / 2) / 2
    assert soft_dice_loss(uniform, target).item() == pytest.approx(expected, rel=1e-6)
    void = torch.full((1, 2, 2), 255)
    assert soft_dice_loss(uniform.requires_grad_(), void).item() == 0.0
