"""`embed` end to end on tiny embedded digits: training, run folder, TensorBoard (scalars, filter
figures, projector), evaluate.py parity and symbol tables (Greek fixtures when present), the embedder
from a checkpoint, the transfer step, the second network, and clear errors for bad input."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.idx import MNIST_FILES, write_idx
from datamodules.mnist import MNISTDataModule
from tasks.embed import EmbedTask
from tests.conftest import QUIET_CPU, assert_curves_only, hparams_scalars
from visionlab.errors import ConfigError, DataError
from visionlab.runner import evaluate, train

GREEK = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "greek"
needs_greek = pytest.mark.skipif(not (GREEK / "greek_train").is_dir(), reason="Greek fixtures not present")

#: 400 train (360 + 40 val) and 100 test digits; 2 epochs of 32-image batches with Adam (learns fast)
TINY_EMBED = [
    "task=embed",
    "data.synthetic={num_train: 400, num_test: 100, seed: 0}",
    "data.batch_size=32",
    "optimizer=adam",
    "optimizer.momentum=null",  # the task's SGD momentum
    "optimizer.lr=0.003",
    "data.num_workers=0",
    *QUIET_CPU,
    "projector.digits=50",
]


def _draw_symbols(folder: Path, per_class: int, seed: int) -> Path:
    """Three classes of dark-on-light 64x64 symbols (ring, cross, bar) with random size and position."""
    rng = np.random.default_rng(seed)
    for name in ("bar", "cross", "ring"):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("L", (64, 64), 235)
            draw = ImageDraw.Draw(img)
            cx, cy, r = (int(v) for v in (*rng.integers(26, 38, size=2), rng.integers(10, 18)))
            width = int(rng.integers(3, 6))
            if name == "ring":
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=20, width=width)
            elif name == "cross":
                draw.line([cx - r, cy - r, cx + r, cy + r], fill=20, width=width)
                draw.line([cx - r, cy + r, cx + r, cy - r], fill=20, width=width)
            else:
                draw.line([cx, cy - r, cx, cy + r], fill=20, width=width)
            img.save(folder / name / f"{name}_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def symbols(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("symbols")
    return _draw_symbols(root / "train", 4, 0), _draw_symbols(root / "test", 2, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, symbols: tuple[Path, Path]) -> Path:
    """One tiny two-epoch mnist_net run with symbols configured, shared by the tests reading its folder."""
    from tests.conftest import compose_config

    run = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        "train",
        [
            *TINY_EMBED,
            f"paths.data_dir={data_dir}",
            f"paths.run_dir={run}",
            f"symbols.train={symbols[0]}",
            f"symbols.test={symbols[1]}",
        ],
    )
    log_file = logging.FileHandler(run / "train.log")  # what Hydra's job logging sets up for a run
    logging.getLogger().addHandler(log_file)
    try:
        train(cfg)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    return run


def test_run_folder_holds_checkpoints_events_and_metrics(trained: Path) -> None:
    assert (trained / "checkpoints" / "best.ckpt").is_file() and (
        trained / "checkpoints" / "last.ckpt"
    ).is_file()
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test/acc"] > 0.2  # far above chance after 2 tiny epochs
    for key in ("loo_1nn_acc", "loo_knn_acc", "new_1nn_acc", "new_knn_acc"):
        assert 0.0 <= metrics[f"test/symbols/{key}"] <= 1.0
    assert metrics["test/symbols/k"] == 3.0


def test_tensorboard_has_scalars_filter_figures_and_projector(trained: Path) -> None:
    tb = trained / "tensorboard"
    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
    } <= scalars
    assert_curves_only(acc)
    assert {"val/acc", "test/acc", "test/symbols/loo_1nn_acc"} <= hparams_scalars(trained)
    assert len(acc.Scalars("val/acc")) == 2  # per epoch, no sanity-check entry
    images = set(acc.Tags()["images"])
    assert {"filters/conv1", "filters/responses", "features/maps", "test/confusion_matrix"} <= images
    assert len(acc.Images("filters/conv1")) == 2
    config = (tb / "projector_config.pbtxt").read_text()
    assert "sprite" in config and "metadata_path" in config
    assert 'tensor_name: "mnist_net_embedding_50d:' in config  # named, not "embedding:<step>"
    maps = acc.Images("features/maps")[-1]
    assert maps.width <= 900  # readable as a thumbnail (it was 1500 px wide)
    folder = tb / config.split('metadata_path: "')[1].split("/metadata.tsv")[0]
    meta = (folder / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "label\tset" and len(meta) == 1 + 40 + 12 + 6  # header, 40 val digits, symbols
    assert sum(line.endswith("symbols/test") for line in meta) == 6
    rows = (folder / "tensors.tsv").read_text().splitlines()
    assert len(rows) == 58 and len(rows[0].split("\t")) == 50
    assert Image.open(folder / "sprite.png").size[0] >= 28 * 8


def test_train_log_gives_each_epoch_its_own_training_metrics(trained: Path) -> None:
    """train.log's epoch lines carry the numbers TensorBoard has for the same epoch (train/acc, logged at
    the module's epoch end, once lagged one epoch behind and was missing from the first line)."""
    acc = EventAccumulator(str(trained / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    lines = [
        line
        for line in (trained / "train.log").read_text().splitlines()
        if re.search(r"epoch \d+/2 \(", line)
    ]
    assert len(lines) == 2
    for line, loss, train_acc in zip(lines, acc.Scalars("train/loss"), acc.Scalars("train/acc"), strict=True):
        shown = dict(item.split("=") for item in line.split("): ", 1)[1].split())
        assert float(shown["train/loss"]) == pytest.approx(loss.value, rel=1e-3)
        assert float(shown["train/acc"]) == pytest.approx(train_acc.value, rel=1e-3)


def test_evaluate_reproduces_training_numbers_and_writes_tables(
    trained: Path, make_cfg, symbols: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    trained_metrics = json.loads((trained / "metrics.json").read_text())
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
        f"symbols.train={symbols[0]}",
        f"symbols.test={symbols[1]}",
        name="evaluate",
        run="eval",
        base=[b for b in TINY_EMBED if "max_epochs" not in b and "projector" not in b],
    )
    results = evaluate(cfg)
    for key in ("test/acc", "test/symbols/loo_1nn_acc", "test/symbols/new_knn_acc"):
        assert results[key] == pytest.approx(trained_metrics[key], abs=1e-6), key
    out = Path(cfg.paths.run_dir)
    assert json.loads((out / "metrics.json").read_text())["test/acc"] == results["test/acc"]
    for png in ("confusion_matrix.png", "ssd_table.png", "symbols_train_loo.png", "symbols_test.png"):
        assert (out / png).stat().st_size > 1000, png
    tables = json.loads((out / "symbols.json").read_text())
    assert tables["ssd_table"]["columns"] == ["bar_000", "cross_000", "ring_000"]
    assert tables["ssd_table"]["rows"][0]["ssd"]["bar_000"] == 0.0  # the first image against itself
    assert len(tables["new_images"]) == 6
    printed = capsys.readouterr().out
    assert "SSD from each class's first image" in printed and "leave-one-out accuracy" in printed


@needs_greek
def test_evaluate_on_the_greek_letters(trained: Path, make_cfg, capsys: pytest.CaptureFixture) -> None:
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
        f"symbols.train={GREEK / 'greek_train'}",
        f"symbols.test={GREEK / 'greek_test'}",
        "symbols.k=5",
        name="evaluate",
        run="eval_greek",
        base=[b for b in TINY_EMBED if "max_epochs" not in b and "projector" not in b],
    )
    results = evaluate(cfg)
    metrics = json.loads((Path(cfg.paths.run_dir) / "metrics.json").read_text())
    for key in ("loo_1nn_acc", "loo_knn_acc", "new_1nn_acc", "new_knn_acc"):
        assert metrics[f"test/symbols/{key}"] == results[f"test/symbols/{key}"]
    assert metrics["test/symbols/k"] == 5.0
    printed = capsys.readouterr().out
    assert "27 images in 3 classes (alpha, beta, gamma)" in printed
    assert "alpha_001" in printed and "gamma_test_004" in printed and "LOO 5-NN" in printed


def test_embedder_from_a_checkpoint(trained: Path) -> None:
    ckpt = trained / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["task_name"] == "embed" and state["hyper_parameters"]["data_info"]["mean"] == [0.1307]
    embedder = EmbedTask.load_embedder(ckpt)
    digits = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    emb = embedder(digits)
    assert emb.shape == (5, 50) and bool((emb >= 0).all())  # after the ReLU
    normalised = (digits[:, None].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(embedder(normalised), emb)
    torch.testing.assert_close(embedder(digits[..., None]), emb)
    embedder.train()
    torch.testing.assert_close(embedder(digits), emb)  # stays in eval mode: dropout never applies
    with pytest.raises(ValueError, match=r"expected uint8"):
        embedder(torch.zeros(2, 3, 28, 28))


def test_embedder_embeds_a_symbol_folder(trained: Path, symbols: tuple[Path, Path]) -> None:
    embedder = EmbedTask.load_embedder(trained / "checkpoints" / "last.ckpt")
    emb, loaded = embedder.embed_folder(symbols[0])
    assert emb.shape == (12, 50) and loaded.class_names == ["bar", "cross", "ring"]


def test_transfer_trains_only_the_new_last_layer(trained: Path, make_cfg, symbols: tuple[Path, Path]) -> None:
    digit_ckpt = trained / "checkpoints" / "best.ckpt"
    cfg = make_cfg(
        f"transfer.from_ckpt={digit_ckpt}",
        f"transfer.train={symbols[0]}",
        f"transfer.test={symbols[1]}",
        "trainer.max_epochs=2",
        "~logger",
        "callbacks.lr_monitor=null",
        run="transfer",
        base=TINY_EMBED,
    )
    metrics_value = train(cfg)
    assert metrics_value is not None
    run = Path(cfg.paths.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(k for k in metrics if k.startswith("test/acc_class/")) == {
        "test/acc_class/bar", "test/acc_class/cross", "test/acc_class/ring",
    }  # fmt: skip
    digit = torch.load(digit_ckpt, weights_only=True)["state_dict"]
    new = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert new["net.fc2.weight"].shape == (3, 50)
    for key in ("net.conv1.weight", "net.conv2.weight", "net.fc1.weight", "net.fc1.bias"):
        torch.testing.assert_close(new[key], digit[key])  # frozen
    # evaluate.py on the transfer checkpoint, with the same folders
    results = evaluate(
        make_cfg(
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"transfer.train={symbols[0]}",
            f"transfer.test={symbols[1]}",
            name="evaluate",
            run="transfer_eval",
            base=TINY_EMBED,
        )
    )
    assert 0.0 <= results["test/acc"] <= 1.0


def test_convnet_trains_and_embeds_1000_d(make_cfg) -> None:
    cfg = make_cfg(
        "model=convnet",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "optimizer.lr=0.001",
        "~logger",
        "callbacks.lr_monitor=null",
        run="convnet",
        base=TINY_EMBED,
    )
    train(cfg)
    run = Path(cfg.paths.run_dir)
    assert 0.0 <= json.loads((run / "metrics.json").read_text())["test/acc"] <= 1.0
    embedder = EmbedTask.load_embedder(run / "checkpoints" / "last.ckpt")
    assert embedder(torch.zeros(3, 28, 28, dtype=torch.uint8)).shape == (3, 1000)


def test_same_seed_gives_identical_metrics(make_cfg) -> None:
    runs = [
        train(
            make_cfg(
                "trainer.max_epochs=1",
                "run_test=false",
                "~logger",
                "callbacks.lr_monitor=null",
                run=f"seed{i}",
                base=TINY_EMBED,
            )
        )
        for i in range(2)
    ]
    assert runs[0] == runs[1]


# ---- data -----------------------------------------------------------------------------------------


def _mnist_folder(folder: Path, n_train: int = 40, n_test: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / MNIST_FILES["train_images"], rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(folder / MNIST_FILES["train_labels"], (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(
        folder / f"{MNIST_FILES['test_images']}.gz", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    )
    write_idx(folder / f"{MNIST_FILES['test_labels']}.gz", (np.arange(n_test) % 10).astype(np.uint8))
    return folder


def test_datamodule_reads_torchvision_layout_and_splits_reproducibly(tmp_path: Path) -> None:
    _mnist_folder(tmp_path / "MNIST" / "raw")
    first = MNISTDataModule(str(tmp_path), root=str(tmp_path), val_fraction=0.25, split_seed=3, batch_size=8)
    first.prepare_data()
    first.setup()
    sizes = {s: len(d) for s, d in first.datasets.items()}
    assert sizes == {"train": 30, "val": 10, "test": 10}
    assert first.info()["class_names"] == [str(d) for d in range(10)] and first.info()["mean"] == [0.1307]
    images, labels = next(iter(first.train_dataloader()))
    assert images.shape == (8, 28, 28, 1) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    second = MNISTDataModule(str(tmp_path), root=str(tmp_path), val_fraction=0.25, split_seed=3)
    second.setup()
    assert torch.equal(first.datasets["val"].indices, second.datasets["val"].indices)
    train_idx, val_idx = (
        set(first.datasets["train"].indices.tolist()),
        set(first.datasets["val"].indices.tolist()),
    )
    assert not train_idx & val_idx and len(train_idx | val_idx) == 40


def test_bad_idx_magic_is_named_through_the_datamodule(make_cfg, tmp_path: Path) -> None:
    root = _mnist_folder(tmp_path / "mnist")
    (root / MNIST_FILES["train_images"]).write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: not an IDX file \(magic number"):
        train(make_cfg(f"data.root={root}", base=TINY_EMBED))


def test_idx_size_mismatch_is_named_through_the_datamodule(make_cfg, tmp_path: Path) -> None:
    root = _mnist_folder(tmp_path / "mnist")
    write_idx(root / MNIST_FILES["train_labels"], np.zeros(39, np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 39 labels but .* 40 images"):
        train(make_cfg(f"data.root={root}", base=TINY_EMBED))


def test_missing_mnist_says_where_it_looked(make_cfg, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no MNIST IDX files found; looked in .*empty.*MNIST/raw"):
        train(make_cfg(f"data.root={tmp_path / 'empty'}", base=TINY_EMBED))
    with pytest.raises(DataError, match=r"data.root=.*nowhere does not exist"):
        train(make_cfg(f"data.root={tmp_path / 'nowhere'}", base=TINY_EMBED))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", r"data.val_fraction=1.5 must be"),
        ("symbols.k=0", r"symbols.k=0 must be a positive integer"),
        ("model.arch=lenet", r"model.arch='lenet' is not an embed model"),
        ("+symbols.transform.blur=2", r"symbols.transform has unknown keys \['blur'\]"),
        ("transfer.from_ckpt=/nowhere.ckpt", r"transfer.from_ckpt is set but transfer.train is not"),
    ],
)
def test_config_mistakes_name_the_key(make_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(override, base=TINY_EMBED))


def test_k_larger_than_the_symbol_set(trained: Path, make_cfg, symbols: tuple[Path, Path]) -> None:
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
        f"symbols.train={symbols[0]}",
        "symbols.k=12",
        name="evaluate",
        run="eval_k",
        base=TINY_EMBED,
    )
    with pytest.raises(ConfigError, match=r"symbols.k=12 but leave-one-out on 12 train images"):
        evaluate(cfg)


def test_missing_symbol_folder_is_named(trained: Path, make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        f"ckpt_path={trained / 'checkpoints' / 'best.ckpt'}",
        f"symbols.train={tmp_path / 'no_letters'}",
        name="evaluate",
        run="eval_missing",
        base=TINY_EMBED,
    )
    with pytest.raises(DataError, match=r"symbols.train=.*no_letters: symbol folder not found"):
        evaluate(cfg)
