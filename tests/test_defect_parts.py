"""Fast tests of the defect task's building blocks: MVTec reader, generator, metrics, autoencoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision, BinaryPrecisionRecallCurve

from datamodules.mvtec_format import index_category, read_mask, split_train_val
from datamodules.synthetic.mvtec import DEFECT_TYPES, generate_mvtec
from tasks.metrics.anomaly import (
    AUPRO,
    DefectPixelScores,
    PixelAUROC,
    PixelAveragePrecision,
    f1_optimal_threshold,
    image_scores,
)
from tasks.nets.autoencoder import ConvAutoencoder, anomaly_map, reconstruction_loss
from visionlab.errors import ConfigError, DataError

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "aupro_case.json"


@pytest.fixture(scope="module")
def category(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hazelnut")
    generate_mvtec(root, num_train=6, num_test_good=2, num_test_per_defect=2, size=64, seed=3)
    return root


@pytest.fixture(scope="module")
def aupro_case() -> tuple[dict, torch.Tensor, torch.Tensor]:
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} not present")
    case = json.loads(FIXTURE.read_text())
    return case, torch.tensor(case["anomaly_maps"]), torch.tensor(case["masks"]).bool()


# --- generator and reader ----------------------------------------------------------------------


def test_generated_category_reads_back(category: Path) -> None:
    cat = index_category(category)
    assert len(cat.train) == 6 and cat.defect_types == sorted(DEFECT_TYPES)
    assert sum(s.label == 0 for s in cat.test) == 2 and sum(s.label == 1 for s in cat.test) == 8
    for sample in cat.test:
        image = np.asarray(Image.open(sample.image))
        assert image.shape == (64, 64, 3)
        mask = read_mask(sample, image.shape[:2])
        assert mask.dtype == bool and mask.shape == (64, 64)
        assert mask.any() == bool(sample.label), sample.image
        if sample.mask is not None:
            assert set(np.unique(np.asarray(Image.open(sample.mask)))) <= {0, 255}


def test_generator_is_deterministic(category: Path, tmp_path: Path) -> None:
    generate_mvtec(tmp_path, num_train=6, num_test_good=2, num_test_per_defect=2, size=64, seed=3)
    for rel in ("train/good/005.png", "test/hole/001.png", "ground_truth/crack/000_mask.png"):
        assert (tmp_path / rel).read_bytes() == (category / rel).read_bytes(), rel


def test_missing_mask_names_the_image(category: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(category, root)
    (root / "ground_truth" / "cut" / "001_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/cut/001\.png.*001_mask\.png"):
        index_category(root)


def test_mask_size_mismatch_names_the_mask(category: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "cat"
    shutil.copytree(category, root)
    Image.new("L", (32, 64)).save(root / "ground_truth" / "print" / "000_mask.png")
    with pytest.raises(DataError, match=r"print/000_mask\.png: mask is 32x64 but its image .* is 64x64"):
        index_category(root)


def test_missing_category_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train/good.*mvtec\.com"):
        index_category(tmp_path / "nope")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no training images"):
        index_category(tmp_path / "empty")


def test_train_val_split_is_deterministic_and_disjoint(category: Path) -> None:
    train = index_category(category).train
    a_train, a_val = split_train_val(train, 0.34, seed=1)
    b_train, b_val = split_train_val(train, 0.34, seed=1)
    assert (a_train, a_val) == (b_train, b_val)
    assert len(a_val) == 2 and len(a_train) == 4 and not set(a_train) & set(a_val)
    assert split_train_val(train, 0.0)[1] == []


# --- metrics -----------------------------------------------------------------------------------


def test_aupro_fixture_exact_and_binned(aupro_case) -> None:
    case, maps, masks = aupro_case
    for num_bins in (None, 1000):  # 1000 bins put each of the fixture's distinct scores in its own bin
        metric = AUPRO(fpr_limit=0.3, num_bins=num_bins)
        metric.update(maps[:1], masks[:1])
        metric.update(maps[1:], masks[1:])
        assert metric.compute().item() == pytest.approx(case["aupro_0.3"], abs=1e-12), num_bins


def test_aupro_tie_is_one_threshold(aupro_case) -> None:
    """Breaking the anomalous/normal tie at 0.8125 either way gives the fixture's two other values."""
    case, maps, masks = aupro_case
    tied = maps[0, 2, 3].item()
    assert masks[0, 2, 3] and (maps[1] == tied).any() and not masks[1].any()
    for eps, key in ((1e-4, "if_tie_broken_anomalous_first"), (-1e-4, "if_tie_broken_normal_first")):
        shifted = maps.clone()
        shifted[0, 2, 3] += eps
        metric = AUPRO(num_bins=None)
        metric.update(shifted, masks)
        assert metric.compute().item() == pytest.approx(case[key], abs=1e-6)
        assert metric.compute().item() != pytest.approx(case["aupro_0.3"], abs=1e-3)


def _official_aupro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """MVTec's compute_pro + trapezoid, transcribed in plain numpy as an independent reference."""
    fp_change, pro_change, n_regions = [], [], 0
    for gt in masks:
        labeled, n = ndimage.label(gt, structure=np.ones((3, 3), int))
        n_regions += n
        pro = np.zeros(gt.shape)
        for k in range(1, n + 1):
            pro[labeled == k] = 1.0 / np.sum(labeled == k)
        fp_change.append(labeled == 0)
        pro_change.append(pro)
    order = np.argsort(maps.ravel(), kind="stable")[::-1]
    scores = maps.ravel()[order]
    fp_c = np.array(fp_change).ravel()[order]
    fprs = np.cumsum(fp_c) / fp_c.sum()
    pros = np.cumsum(np.array(pro_change).ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    x = np.concatenate([[0], fprs[keep], [1]])
    y = np.concatenate([[0], pros[keep], [1]])
    i = int(np.searchsorted(x, limit, side="right"))
    y_lim = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
    m = x <= limit
    area = np.sum(0.5 * (y[m][1:] + y[m][:-1]) * np.diff(x[m]))
    return float((area + 0.5 * (y_lim + y[i - 1]) * (limit - x[i - 1])) / limit)


def test_aupro_matches_official_on_random_maps() -> None:
    """Random blobs, scores at the centres of 200 bins (many ties): exact and binned equal the reference."""
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 32, 32, generator=gen) > 0.93
    masks[4:] = False  # two defect-free images contribute only normal pixels
    maps = (torch.rand(6, 32, 32, generator=gen) * 0.7 + masks * 0.3) * 200
    maps = (maps.floor() + 0.5) / 200
    reference = _official_aupro(maps.double().numpy(), masks.numpy(), 0.3)
    for num_bins in (None, 200):
        metric = AUPRO(num_bins=num_bins)
        for i in range(0, 6, 2):
            metric.update(maps[i : i + 2], masks[i : i + 2])
        assert metric.compute().item() == pytest.approx(reference, abs=1e-9), num_bins
    coarse = AUPRO(num_bins=20)
    coarse.update(maps, masks)
    assert coarse.compute().item() == pytest.approx(reference, abs=0.05)


def test_pixel_auroc_on_fixture(aupro_case) -> None:
    case, maps, masks = aupro_case
    exact = BinaryAUROC(thresholds=None)
    exact.update(maps.flatten(), masks.flatten().long())
    binned = PixelAUROC(num_bins=1000)
    binned.update(maps, masks)
    assert exact.compute().item() == pytest.approx(case["pixel_auroc"], abs=1e-6)
    assert binned.compute().item() == pytest.approx(case["pixel_auroc"], abs=1e-12)


def test_binned_pixel_metrics_match_exact_torchmetrics() -> None:
    """Scores at the centres of 100 bins, with ties: the histogram metrics equal torchmetrics' exact ones."""
    gen = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 24, 24, generator=gen) > 0.8
    maps = ((torch.rand(4, 24, 24, generator=gen) * 0.8 + masks * 0.2) * 100).floor().add(0.5) / 100
    for ours, theirs in (
        (PixelAUROC(100), BinaryAUROC()),
        (PixelAveragePrecision(100), BinaryAveragePrecision()),
    ):
        ours.update(maps[:2], masks[:2])
        ours.update(maps[2:], masks[2:])
        theirs.update(maps.flatten(), masks.flatten().long())
        assert ours.compute().item() == pytest.approx(theirs.compute().item(), abs=1e-6), type(ours).__name__


def test_defect_pixel_scores_hand_computed() -> None:
    # One 2x2 "crack" image: fault at the top row; scores 0.5 0.05 / 0.2 0.0.
    maps = torch.tensor([[[0.5, 0.05], [0.2, 0.0]], [[0.3, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[True, True], [False, False]], [[False, False], [False, False]]])
    metric = DefectPixelScores(thresholds=(0.1, 0.4), defect_types=("crack", "good"))
    metric.update(maps, masks, torch.tensor([0, 1]))
    scores = metric.compute()
    assert scores.shape == (2, 2, 3)
    # crack @0.1: pred {(0,0),(1,0)}: tp 1, fp 1, fn 1, tn 1 -> recall 1/2, precision 1/2, accuracy 2/4
    assert scores[0, 0].tolist() == pytest.approx([0.5, 0.5, 0.5])
    # crack @0.4: pred {(0,0)}: tp 1, fp 0, fn 1, tn 2 -> 1/2, 1, 3/4
    assert scores[0, 1].tolist() == pytest.approx([0.5, 1.0, 0.75])
    # good @0.1: one false positive, no fault pixels -> recall NaN, precision 0, accuracy 3/4
    assert torch.isnan(scores[1, 0, 0]) and scores[1, 0, 1:].tolist() == pytest.approx([0.0, 0.75])
    assert metric.table()["crack"][0.4]["precision"] == 1.0


def test_image_scores_and_f1_threshold() -> None:
    maps = torch.zeros(2, 50, 50)
    maps[1, 20:30, 20:30] = 1.0
    maps[0, 0, 0] = 1.0  # a single hot pixel: max sees it unsmoothed, p99 does not
    assert image_scores(maps, "max", 0).tolist() == [1.0, 1.0]
    assert image_scores(maps, "p99", 0).tolist() == [0.0, 1.0]
    smoothed = image_scores(maps, "max", 2.0)
    assert smoothed[0] < 0.1 < 0.9 < smoothed[1]
    # top1 = mean of the highest 1% (25 of 2500 pixels): one hot pixel -> 1/25; the 10x10 square -> 1
    assert image_scores(maps, "top1", 0).tolist() == pytest.approx([1 / 25, 1.0])


def test_image_scores_standardised_by_good_error_statistics() -> None:
    # Good images always err at the rim (left column); the defect (a 3x3 square) errs less in absolute
    # terms, but far more than good images do at its place: standardised, the defect image scores higher.
    maps = torch.full((2, 10, 10), 0.02)
    maps[:, :, 0] = 0.5
    maps[1, 4:7, 4:7] = 0.2
    mean = torch.full((10, 10), 0.02)
    mean[:, 0] = 0.5
    std = torch.full((10, 10), 0.01)
    raw = image_scores(maps, "max", 0)
    assert raw[0] == raw[1] == pytest.approx(0.5)  # the rim decides the raw maximum
    z = image_scores(maps, "max", 0, mean, std)
    # good: every pixel at its mean -> z = 0 -> sigmoid(0) = 0.5; defect: (0.2 - 0.02) / 0.01 = 18
    assert z.tolist() == pytest.approx([0.5, float(torch.sigmoid(torch.tensor(1.8)))])
    with pytest.raises(ConfigError, match="image_score"):
        image_scores(maps, "mean", 0)

    preds = torch.tensor([0.1, 0.2, 0.35, 0.4, 0.6, 0.8])
    target = torch.tensor([0, 0, 1, 0, 1, 1])
    curve = BinaryPrecisionRecallCurve(thresholds=11)
    curve.update(preds, target)
    threshold, f1 = f1_optimal_threshold(*curve.compute())
    assert threshold == pytest.approx(0.3) and f1 == pytest.approx(6 / 7)  # tp 3, fp 1, fn 0
    ours = PixelAveragePrecision(num_bins=10)
    ours.update(preds, target.bool())
    assert f1_optimal_threshold(*ours.precision_recall_curve()) == pytest.approx((0.3, 6 / 7))


# --- autoencoder -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "bottleneck", "extra"), [(128, 100, 0), (256, 500, 1)])
def test_autoencoder_shapes(size: int, bottleneck: int, extra: int) -> None:
    model = ConvAutoencoder(input_size=size, bottleneck=bottleneck, batch_norm=True)
    assert model.code_shape == (256, 8, 8)
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 + extra
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        x_hat = model(x)
        code = model.encoder(x)
    assert x_hat.shape == x.shape and code.shape == (2, bottleneck)
    assert x_hat.min() >= 0.0 and x_hat.max() <= 1.0
    assert anomaly_map(x, x_hat).shape == (2, size, size)
    assert anomaly_map(x, x).abs().max() == 0


def test_reconstruction_losses() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert reconstruction_loss(x, x, "mse").item() == 0.0
    assert reconstruction_loss(x, x, "ssim").item() == pytest.approx(0.0, abs=1e-5)
    assert reconstruction_loss(x, torch.rand_like(x), "ssim").item() > 0.5
    with pytest.raises(ConfigError, match="loss='l3'"):
        reconstruction_loss(x, x, "l3")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 100}, r"input_size=100: must be divisible by 2\*\*depth = 16"),
        ({"channels": []}, "channels="),
        ({"activation": "swish"}, "activation='swish'"),
        ({"out_activation": "softmax"}, "out_activation='softmax'"),
        ({"bottleneck": 0}, "bottleneck=0"),
        ({"extra_layers": -1}, "extra_layers=-1"),
    ],
)
def test_autoencoder_validates_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ConvAutoencoder(**kwargs)
