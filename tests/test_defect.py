"""`defect` end to end on the embedded hazelnut set: training, evaluation parity, thresholds fitted on
validation (never test), TensorBoard content, constant-memory metric states and clear bad-input errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from datamodules.mvtec import MVTecDataModule
from tasks.defect import DefectTask, per_sample_loss
from tasks.defect.settings import DEFAULT_SETTINGS
from tasks.metrics.anomaly import PixelAveragePrecision, f1_optimal_threshold, image_scores
from tasks.metrics.defect import DefectEvaluation, quantile_threshold
from tasks.nets.autoencoder import anomaly_map, reconstruction_loss
from tests.conftest import QUIET_CPU, assert_curves_only, assert_scalar_tags, hparams_scalars, read_events
from visionlab.errors import ConfigError, DataError
from visionlab.runner import build_datamodule, evaluate, train

TYPES = ["crack", "cut", "hole", "print"]
SYNTHETIC = "data.synthetic={num_train: 20, num_test_good: 4, num_test_per_defect: 4, size: 64, seed: 0}"
#: 16 train / 4 val good images, 1 validation and 3 test images per defect type, 32 px, 3 convolutions
TINY_DEFECT = [
    "task=defect",
    SYNTHETIC,
    "data.val_fraction=0.2",
    "model.input_size=32",
    "model.channels=[8,16,32]",
    "model.bottleneck=16",
    "data.batch_size=8",
    "data.num_workers=0",
    *QUIET_CPU,
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """One tiny two-epoch run (validation with defects) shared by the tests that read its folder."""
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("defect_trained")
    train(compose_config("train", [*TINY_DEFECT, f"paths.data_dir={data_dir}", f"paths.run_dir={run}"]))
    return run


def _cfg(make_cfg, *overrides: str, **kwargs):
    return make_cfg(*overrides, base=TINY_DEFECT, **kwargs)


def test_run_folder_holds_checkpoints_and_all_metrics(trained: Path) -> None:
    assert (trained / "checkpoints" / "best.ckpt").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((trained / "metrics.json").read_text())
    for group in ["", *(f"{t}/" for t in TYPES)]:
        for name in ("image_auroc", "pixel_auroc", "aupro", "pixel_ap", "pixel_f1", "image_f1"):
            value = metrics[f"test/{group}{name}"]
            assert 0.0 <= value <= 1.0, (group, name, value)
    for t in ["good", *TYPES]:
        for threshold in DEFAULT_SETTINGS["thresholds"]:
            assert f"test/ref/{t}/{threshold:g}/accuracy" in metrics
    assert 0.0 <= metrics["test/ref/crack/0.1/recall"] <= 1.0
    assert math.isnan(metrics["test/ref/good/0.1/recall"])  # good images have no fault pixels
    assert metrics["test/threshold_from_val_defects"] == 1.0
    assert 0.0 <= metrics["test/pixel_threshold"] < 1.0


def test_tensorboard_has_loss_metric_table_examples_and_pr_curve(trained: Path) -> None:
    acc = read_events(trained / "tensorboard")
    assert_scalar_tags(
        acc,
        "train/loss",
        "val/loss",
        "val/image_auroc",
        "val/pixel_auroc",
        "val/aupro",
        "val/pixel_ap",
        "val/crack/pixel_auroc",
        "val/pixel_threshold",
        "val/pixel_f1",
    )
    assert_curves_only(acc)  # test values: metrics.json (per type too), the summary ones HPARAMS
    assert {"val/loss", "test/aupro", "test/image_auroc"} <= hparams_scalars(trained)
    assert len(acc.Scalars("val/pixel_auroc")) == 2  # the metric table, every epoch
    images = set(acc.Tags()["images"])
    assert {"val/examples", "test/pixel_pr_curves_by_type"} <= images
    assert {f"test/examples/{t}" for t in ["good", *TYPES]} <= images
    pr_curves = acc.PluginTagToContent("pr_curves")
    assert {"val/pixel_pr_curve", "test/pixel_pr_curve"} <= set(pr_curves)
    assert "test/pixel_pr_curve" not in images  # one tag, one plugin: TensorBoard shows neither otherwise
    # the test curve's data, as the PR CURVES dashboard reads it: rows TP, FP, TN, FN, precision, recall
    curve = tensor_util.make_ndarray(acc.Tensors("test/pixel_pr_curve")[-1].tensor_proto)
    assert curve.shape[0] == 6 and curve.shape[1] > 2
    assert ((curve[4] >= 0) & (curve[4] <= 1)).all() and curve[5].max() == pytest.approx(1.0)
    texts = acc.PluginTagToContent("text")
    assert {"val/metric_table/text_summary", "val/reference_table/text_summary"} <= set(texts)
    table = acc.Tensors("val/metric_table/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "image_auroc" in table and "| crack |" in table


def test_evaluate_reproduces_the_training_test_numbers(trained: Path, make_cfg, capsys) -> None:
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    cfg = _cfg(make_cfg, f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}", name="evaluate", run="eval")
    results = evaluate(cfg)
    test_keys = {k for k in trained_metrics if k.startswith("test/")}
    assert set(results) == test_keys
    for key in test_keys:
        a, b = results[key], trained_metrics[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), key
    out = Path(cfg.paths.run_dir)
    assert json.loads((out / "metrics.json").read_text()).keys() == results.keys()
    for t in ["good", *TYPES]:
        assert (out / f"examples_{t}.png").stat().st_size > 5000
    assert (out / "pixel_pr_curve.png").stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "threshold   recall precision accuracy" in printed
    assert "crack             0.15" in printed and "image_auroc pixel_auroc       aupro" in printed


def test_checkpoint_loads_with_weights_only_and_carries_the_thresholds(trained: Path) -> None:
    path = trained / "checkpoints" / "best.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["task_name"] == "defect"
    assert state["hyper_parameters"]["data_info"]["defect_types"] == TYPES
    assert "pixel_threshold" in state["state_dict"]
    module = DefectTask.load_from_checkpoint(path, weights_only=True, load_pretrained=False)
    assert math.isfinite(float(module.pixel_threshold)) and float(module.threshold_from_defects) == 1.0
    # metrics.normalize=zscore (the default): the good training images' error statistics travel too
    assert module.settings["normalize"] == "zscore" and float(module.error_count) == 16
    assert module.error_mean.shape == (32, 32) and bool((module.error_std > 0).all())


def _maps_and_scores(
    module: DefectTask, loader
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    maps, masks, scores, labels = [], [], [], []
    module.eval()
    with torch.no_grad():
        for images, mask, types in loader:
            x = images.permute(0, 3, 1, 2).float() / 255
            m = anomaly_map(x, module(x))
            maps.append(m)
            masks.append(mask.bool())
            scores.append(module._scores(m))
            labels.append(types > 0)
    return torch.cat(maps), torch.cat(masks), torch.cat(scores), torch.cat(labels)


def _f1_threshold(values: torch.Tensor, truth: torch.Tensor, bins: int) -> float:
    metric = PixelAveragePrecision(bins)
    metric.update(values, truth)
    return f1_optimal_threshold(*metric.precision_recall_curve())[0]


def test_thresholds_are_fitted_on_validation_not_test(trained: Path, make_cfg) -> None:
    module = DefectTask.load_from_checkpoint(trained / "checkpoints" / "best.ckpt", weights_only=True)
    datamodule = build_datamodule(_cfg(make_cfg))
    val = _maps_and_scores(module, datamodule.val_dataloader())
    test = _maps_and_scores(module, datamodule.test_dataloader())
    assert val[3].any() and not set(datamodule.splits["val"]) & set(datamodule.splits["test"])
    bins, image_bins = module.settings["num_bins"], module.settings["image_bins"]
    on_val = _f1_threshold(val[0], val[1], bins), _f1_threshold(val[2], val[3], image_bins)
    on_test = _f1_threshold(test[0], test[1], bins), _f1_threshold(test[2], test[3], image_bins)
    fitted = float(module.pixel_threshold), float(module.image_threshold)
    assert fitted == pytest.approx(on_val, abs=1e-9)
    assert fitted != pytest.approx(on_test, abs=1e-9)


def test_without_validation_defects_the_threshold_is_a_good_pixel_quantile(make_cfg) -> None:
    cfg = _cfg(make_cfg, "data.val_defect_fraction=0", "trainer.max_epochs=1", run="fallback")
    train(cfg)
    run = Path(cfg.paths.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/threshold_from_val_defects"] == 0.0
    module = DefectTask.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    datamodule = build_datamodule(cfg)
    assert all(s.defect_type == "good" for s in datamodule.splits["val"])
    assert sum(s.defect_type == "crack" for s in datamodule.splits["test"]) == 4  # none moved out of test
    maps = _maps_and_scores(module, datamodule.val_dataloader())[0]
    expected = float(np.quantile(maps.numpy(), DEFAULT_SETTINGS["fallback_quantile"]))
    assert float(module.pixel_threshold) == pytest.approx(expected, abs=2.0 / DEFAULT_SETTINGS["num_bins"])
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"val/loss", "val/pixel_threshold"} <= scalars
    assert not {"val/pixel_auroc", "val/image_auroc", "val/aupro"} & scalars


def test_metric_states_do_not_grow_with_updates() -> None:
    evaluation = DefectEvaluation(TYPES, DEFAULT_SETTINGS)
    evaluation.set_thresholds(0.2, 0.3)

    def state_elements() -> int:
        total = 0
        for metric in evaluation.modules():
            for name in getattr(metric, "_defaults", {}):
                value = getattr(metric, name)
                total += sum(v.numel() for v in value) if isinstance(value, list) else value.numel()
        return total

    gen = torch.Generator().manual_seed(0)
    sizes = []
    for step in range(4):
        types = torch.tensor([0, 1, 2, 3, 4, step % 5])
        masks = torch.rand(6, 32, 32, generator=gen) > 0.95
        masks[types == 0] = False
        maps = torch.rand(6, 32, 32, generator=gen)
        evaluation.update(maps, masks, types, types.tolist(), image_scores(maps))
        sizes.append(state_elements())
    assert len(set(sizes)) == 1, sizes
    assert all(math.isfinite(v) for v in evaluation.compute()["groups"]["all"].values())


def test_quantile_threshold_and_per_sample_loss() -> None:
    hist = torch.tensor([0, 90, 9, 1])  # scores in bins of width 0.25
    assert quantile_threshold(hist, 0.9, (0.0, 1.0)) == 0.5
    assert quantile_threshold(hist, 0.995, (0.0, 1.0)) == 1.0
    assert math.isnan(quantile_threshold(torch.zeros(4), 0.5, (0.0, 1.0)))
    x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    for kind in ("mse", "ssim"):
        assert per_sample_loss(x, y, kind).shape == (3,)
        assert per_sample_loss(x, y, kind).mean().item() == pytest.approx(
            reconstruction_loss(x, y, kind).item(), abs=1e-5
        )


def test_datamodule_splits_are_seeded_and_default_by_source(data_dir: Path, trained: Path) -> None:
    root = data_dir / "mvtec_synthetic" / "hazelnut"
    # null = a quarter of each defect type validates on the embedded set, none on a given root
    assert MVTecDataModule(str(data_dir), image_size=32).val_defect_fraction == 0.25
    given = MVTecDataModule(str(data_dir), root=str(root), image_size=32, val_fraction=0.2)
    assert given.val_defect_fraction == 0.0
    a = MVTecDataModule(
        str(data_dir), root=str(root), image_size=32, val_fraction=0.2, val_defect_fraction=0.5
    )
    b = MVTecDataModule(
        str(data_dir), root=str(root), image_size=32, val_fraction=0.2, val_defect_fraction=0.5
    )
    a.setup()
    b.setup()
    assert a.splits == b.splits
    assert sum(s.defect_type == "hole" for s in a.splits["val"]) == 2
    image, mask, kind = a.datasets["val"][len(a.datasets["val"]) - 1]
    assert image.shape == (32, 32, 3) and image.dtype == torch.uint8
    assert mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0, 1} and int(kind) == 4


# ---- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def category_copy(trained: Path, data_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "hazelnut"
    shutil.copytree(data_dir / "mvtec_synthetic" / "hazelnut", root)
    return root


def test_missing_mask_is_named(category_copy: Path, make_cfg) -> None:
    (category_copy / "ground_truth" / "hole" / "002_mask.png").unlink()
    with pytest.raises(DataError, match=r"test/hole/002\.png: defect image without its mask"):
        train(_cfg(make_cfg, f"data.root={category_copy}"))


def test_mask_of_another_size_is_named(category_copy: Path, make_cfg) -> None:
    Image.new("L", (32, 32)).save(category_copy / "ground_truth" / "cut" / "001_mask.png")
    with pytest.raises(DataError, match=r"cut/001_mask\.png: mask is 32x32 but its image"):
        train(_cfg(make_cfg, f"data.root={category_copy}"))


def test_corrupt_image_is_named(category_copy: Path, make_cfg) -> None:
    (category_copy / "train" / "good" / "003.png").write_bytes(b"\x89PNG nope")
    with pytest.raises(DataError, match=r"003\.png"):
        train(_cfg(make_cfg, f"data.root={category_copy}"))


def test_missing_category_says_where_it_looked(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not an MVTec AD category folder.*train/good"):
        train(_cfg(make_cfg, f"data.root={tmp_path / 'nowhere'}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=0", r"data.val_fraction=0 must be in \(0, 1\)"),
        ("data.val_defect_fraction=1.5", r"data.val_defect_fraction=1.5"),
        ("model.loss=l1", r"model.loss='l1'"),
        ("model.input_size=36", r"model.input_size=36: must be divisible"),
        ("data.image_size=64", r"model.input_size=32 but data.image_size=64"),
        ("metrics.image_score=mean", r"metrics.image_score='mean'"),
        ("+metrics.bins=3", r"metrics.bins is not a key of defect.s metrics; did you mean metrics.num_bins"),
        ("metrics.thresholds=[]", r"metrics.thresholds=\[\]"),
        ("model.dropout=1.5", r"model.dropout=1.5"),
    ],
)
def test_config_mistakes_name_the_key(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(_cfg(make_cfg, override))
