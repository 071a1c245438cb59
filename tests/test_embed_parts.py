"""Fast tests of the embed task's building blocks: IDX files, digit generator, symbol loader, nets, k-NN."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.idx import MNIST_FILES, find_mnist_files, read_idx, read_mnist, write_idx
from datamodules.symbols import SymbolTransform, load_symbols
from datamodules.synthetic.mnist import generate_mnist
from tasks.metrics.knn import KNNAccuracy, knn_predict, nearest_neighbour, ssd_matrix
from tasks.nets.mnist import ConvNet, MnistNet, replace_head
from visionlab.errors import ConfigError, DataError

GREEK = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "greek"
needs_greek = pytest.mark.skipif(not (GREEK / "greek_train").is_dir(), reason="Greek fixtures not present")


# --- IDX -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    write_idx(path, images)
    np.testing.assert_array_equal(read_idx(path, expected_ndim=3), images)
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw[4:8], "big") == 5  # the MNIST header


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*magic"):
        read_idx(path)


def test_idx_truncated_and_wrong_dims(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*\(4, 28, 28\).*truncated"):
        read_idx(path)
    labels = tmp_path / "labels"
    write_idx(labels, np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"labels.*1 dimensions.*expected 3"):
        read_idx(labels, expected_ndim=3)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(path, np.arange(3000, dtype=np.uint8) % 10)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz"):
        read_idx(path)


def _write_mnist(folder: Path, n_train: int, n_test: int, n_train_labels: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{MNIST_FILES['train_images']}.gz", np.zeros((n_train, 28, 28), np.uint8))
    write_idx(folder / MNIST_FILES["train_labels"], np.zeros(n_train_labels or n_train, np.uint8))
    write_idx(folder / MNIST_FILES["test_images"], np.zeros((n_test, 28, 28), np.uint8))
    write_idx(folder / f"{MNIST_FILES['test_labels']}.gz", np.full(n_test, 9, np.uint8))


def test_find_mnist_in_torchvision_layout(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "MNIST" / "raw", 3, 2)
    files = find_mnist_files(tmp_path)
    assert files["train_images"].name == "train-images-idx3-ubyte.gz"
    images, labels = read_mnist(tmp_path, "test")
    assert images.shape == (2, 28, 28) and labels.dtype == np.int64 and labels.tolist() == [9, 9]


def test_find_mnist_missing_says_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    write_idx(tmp_path / "raw" / MNIST_FILES["train_images"], np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError) as err:
        find_mnist_files(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "missing train-labels-idx1-ubyte" in message


def test_mnist_count_mismatch_names_both_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path, 3, 2, n_train_labels=4)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 4 labels but .*train-images.* 3 images"):
        read_mnist(tmp_path, "train")


# --- generated digits ----------------------------------------------------------------------------


def test_generate_mnist_tiny(tmp_path: Path) -> None:
    generate_mnist(tmp_path, num_train=200, num_test=50, seed=3, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.gz" for n in MNIST_FILES.values())
    images, labels = read_mnist(tmp_path, "train")
    test_images, test_labels = read_mnist(tmp_path, "test")
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8 and test_images.shape == (50, 28, 28)
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10  # balanced
    assert set(test_labels.tolist()) <= set(range(10))
    assert images.max() == 255 and images[:, 0, :].max() < 64  # white on black, empty top row mostly
    mass = images.astype(np.float64)
    grid = np.arange(28)
    cy = (mass.sum(2) @ grid) / mass.sum((1, 2))
    cx = (mass.sum(1) @ grid) / mass.sum((1, 2))
    assert np.all(np.abs(cy - 13.5) < 1.0) and np.all(np.abs(cx - 13.5) < 1.0)  # centred by mass
    ink_rows = (images > 32).any(2).sum(1)
    assert 16 <= np.median(ink_rows) <= 22  # fitted in a 20x20 box, like MNIST
    assert len({im.tobytes() for im in images}) == 200  # real variety


def test_generate_mnist_deterministic_and_worker_independent(tmp_path: Path) -> None:
    generate_mnist(tmp_path / "a", num_train=30, num_test=10, seed=1, workers=1)
    generate_mnist(tmp_path / "b", num_train=30, num_test=10, seed=1, workers=2)
    generate_mnist(tmp_path / "c", num_train=30, num_test=10, seed=2, workers=1)
    a, b, c = (read_mnist(tmp_path / x, "train")[0] for x in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- symbols -------------------------------------------------------------------------------------


@needs_greek
def test_load_greek_train() -> None:
    symbols = load_symbols(GREEK / "greek_train")
    assert symbols.images.shape == (27, 1, 28, 28) and symbols.images.dtype == torch.float32
    assert symbols.class_names == ["alpha", "beta", "gamma"]
    assert symbols.labels.tolist() == [0] * 9 + [1] * 9 + [2] * 9
    assert symbols.paths[0].name == "alpha_001.png"
    pixels = symbols.images * 0.3081 + 0.1307  # back to [0, 1]
    flat = pixels.flatten(1)
    assert torch.all(flat.median(1).values < 0.25)  # background dark after inversion
    assert torch.all(flat.max(1).values > 0.6)  # strokes bright


@needs_greek
def test_load_greek_test_uses_train_classes() -> None:
    symbols = load_symbols(
        GREEK / "greek_test", SymbolTransform(interpolation="area"), ["alpha", "beta", "gamma"]
    )
    assert symbols.images.shape == (12, 1, 28, 28) and symbols.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_symbols_errors(tmp_path: Path) -> None:
    (tmp_path / "alpha").mkdir()
    with pytest.raises(DataError, match=r"alpha.*no images"):
        load_symbols(tmp_path)
    with pytest.raises(DataError, match=r"no class folders"):
        load_symbols(tmp_path / "alpha")
    with pytest.raises(DataError, match=r"\['alpha'\] are not among the training classes"):
        load_symbols(tmp_path, class_names=["beta"])
    with pytest.raises(ConfigError, match=r"interpolation"):
        SymbolTransform(interpolation="cubic")


def test_symbol_transform_course_geometry() -> None:
    gray = torch.full((133, 133), 255, dtype=torch.uint8)
    gray[60:73, 60:73] = 0  # a dark 13x13 square in the middle
    out = SymbolTransform(mean=0.0, std=1.0)(gray)
    assert out.shape == (1, 28, 28)
    bright = out[0] > 0.5
    assert 9 <= int(bright.sum()) <= 25  # 13 px * 36/128 ~ 3.7 px wide: white, centred
    assert bright[12:16, 12:16].any() and out[0, 0, 0] == 0.0


# --- networks ------------------------------------------------------------------------------------


def test_mnistnet_matches_reference() -> None:
    net = MnistNet(dropout=0.5).eval()
    assert sum(p.numel() for p in net.parameters()) == 21_840
    x = torch.randn(4, 1, 28, 28)
    emb = net.embed(x)
    assert emb.shape == (4, 50) and bool((emb >= 0).all())  # after ReLU
    out = net(x)
    assert out.shape == (4, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))  # log-probabilities
    maps = net.feature_maps(x)
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(10, 24, 24), (10, 12, 12), (20, 8, 8), (20, 4, 4)]
    assert net.conv1.weight.shape == (10, 1, 5, 5)


def test_convnet_shapes() -> None:
    net = ConvNet().eval()
    assert sum(p.numel() for p in net.parameters()) == 3_199_106
    x = torch.randn(2, 1, 28, 28)
    assert net.embed(x).shape == (2, 1000) and net(x).shape == (2, 10)
    assert tuple(net.feature_maps(x)["block2"].shape) == (2, 64, 7, 7)


def test_replace_head_trains_only_new_layer() -> None:
    net = MnistNet()
    old_fc1 = net.fc1.weight.clone()
    replace_head(net, num_classes=3)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"fc2.weight", "fc2.bias"}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.nll_loss(net(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert net(torch.randn(1, 1, 28, 28)).shape == (1, 3)
    torch.testing.assert_close(net.fc1.weight, old_fc1)


# --- k-NN ----------------------------------------------------------------------------------------

REF = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0], [12.0, 0.0]])
REF_LABELS = torch.tensor([0, 0, 1, 1, 1])


def test_ssd_matrix_hand_computed() -> None:
    ssd = ssd_matrix(
        torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    )
    torch.testing.assert_close(ssd, torch.tensor([[0.0, 8.0, 2.0], [5.0, 25.0, 1.0]]))


def test_knn_one_nearest_and_k3_vote() -> None:
    query = torch.tensor([[0.4, 0.0], [9.0, 0.0], [5.0, 0.0]])
    assert knn_predict(REF, REF_LABELS, query, k=1).tolist() == [0, 1, 0]  # 5.0: nearest is (1, 0)
    # k=3 at x=5: neighbours 1 (class 0, ssd 16), 0 (class 0, 25), 10 (class 1, 25): class 0, 2 votes
    assert knn_predict(REF, REF_LABELS, query, k=3).tolist() == [0, 1, 0]
    # k=5: class 1 wins 3 votes to 2 even though the nearest item is class 0
    assert knn_predict(REF, REF_LABELS, query[2:], k=5).tolist() == [1]
    index, dist = nearest_neighbour(REF, query)
    assert index.tolist() == [0, 2, 1] and dist.tolist() == pytest.approx([0.16, 1.0, 16.0])


def test_knn_tie_broken_by_summed_distance() -> None:
    ref = torch.tensor([[0.0], [3.0], [4.0], [5.0]])
    labels = torch.tensor([1, 1, 0, 0])
    # query 2.5 with k=4: 2 votes each; class 1 sums 6.25 + 0.25 = 6.5, class 0 sums 2.25 + 6.25 = 8.5
    assert knn_predict(ref, labels, torch.tensor([[2.5]]), k=4).tolist() == [1]
    # query 3.6: class 1 sums 12.96 + 0.36 = 13.32, class 0 sums 0.16 + 1.96 = 2.12
    assert knn_predict(ref, labels, torch.tensor([[3.6]]), k=4).tolist() == [0]
    # an exact tie goes to the smaller class index
    assert knn_predict(
        torch.tensor([[0.0], [2.0]]), torch.tensor([1, 0]), torch.tensor([[1.0]]), k=2
    ).tolist() == [0]


def test_knn_leave_one_out_excludes_self() -> None:
    # item 1 (class 0) is closer to class-1 items than to item 0, so LOO misclassifies it
    emb = torch.tensor([[0.0], [6.0], [7.5], [8.0]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_predict(emb, labels, emb, k=1).tolist() == [0, 0, 1, 1]  # trivially itself
    assert knn_predict(emb, labels, emb, k=1, exclude_self=True).tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"k=4"):
        knn_predict(emb, labels, emb, k=4, exclude_self=True)


def test_knn_accuracy_metric_modes() -> None:
    metric = KNNAccuracy(k=1, reference=(REF, REF_LABELS))
    metric.update(torch.tensor([[0.4, 0.0], [9.0, 0.0]]), torch.tensor([0, 0]))
    metric.update(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert metric.compute().item() == pytest.approx(2 / 3)
    metric.reset()
    metric.update(torch.tensor([[11.5, 0.0]]), torch.tensor([1]))
    assert metric.compute().item() == 1.0  # reference survives reset
    loo = KNNAccuracy(k=1, leave_one_out=True)
    loo.update(torch.tensor([[0.0], [6.0]]), torch.tensor([0, 0]))
    loo.update(torch.tensor([[7.5], [8.0]]), torch.tensor([1, 1]))
    assert loo.compute().item() == 0.75
    with pytest.raises(RuntimeError, match=r"set_reference"):
        empty = KNNAccuracy()
        empty.update(REF, REF_LABELS)
        empty.compute()
