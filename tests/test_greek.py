"""The embedded Greek-letter symbol set: the generator's layout and look, its two hands, determinism,
the `symbols:` settings (embedded / auto / folders / null) checked before any data work, and a tiny
`task=embed` run that reports the symbol study on the embedded set by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.symbols import (
    SYNTHETIC_DEFAULTS,
    SymbolTransform,
    embedded_symbols,
    load_symbols,
    resolve_symbol_folders,
    synthetic_params,
)
from datamodules.synthetic.greek import CLASSES, TEST_HAND, TRAIN_HAND, draw_letter, generate_greek
from tasks.embed import EmbedTask
from tests.conftest import hparams_scalars
from tests.test_embed import GREEK, needs_greek
from tests.test_embed import TINY_EMBED as EMBED_TINY
from visionlab.errors import ConfigError, DataError
from visionlab.runner import evaluate, train

#: a small set: 3 letters x (4 train, 2 test) images of 96 px
SMALL = {
    "classes": ["alpha", "beta", "gamma"],
    "per_class_train": 4,
    "per_class_test": 2,
    "size": 96,
    "seed": 0,
}
#: test_embed.py's tiny digits and training, one epoch
TINY_EMBED = ["trainer.max_epochs=1" if o.startswith("trainer.max_epochs=") else o for o in EMBED_TINY]


def _pixels(folder: Path) -> dict[str, list[np.ndarray]]:
    return {
        c.name: [np.asarray(Image.open(p)) for p in sorted(c.glob("*.png"))]
        for c in sorted(folder.iterdir())
        if c.is_dir()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("greek") / "set"
    generate_greek(root, **SMALL)
    return root


# --- the generator --------------------------------------------------------------------------------


def test_layout_counts_names_and_format(small: Path) -> None:
    for split, count, stem in (("train", 4, "alpha_001"), ("test", 2, "alpha_test_001")):
        folder = small / split
        assert sorted(p.name for p in folder.iterdir()) == ["alpha", "beta", "gamma"]
        for cls in ("alpha", "beta", "gamma"):
            files = sorted((folder / cls).glob("*.png"))
            assert len(files) == count
            assert files[0].stem == stem.replace("alpha", cls)
            with Image.open(files[0]) as img:
                assert img.mode == "L" and img.size == (96, 96)
    symbols = load_symbols(small / "train")
    assert symbols.images.shape == (12, 1, 28, 28) and symbols.class_names == ["alpha", "beta", "gamma"]


def test_dark_strokes_on_light_paper_in_the_central_crop() -> None:
    """Every letter by both hands: light paper, dark ink, some ink but not a blot, and all of it
    inside the central 100 px of 133 that the course transform keeps."""
    for hand in (TRAIN_HAND, TEST_HAND):
        for i, name in enumerate(CLASSES):
            image = draw_letter(name, hand, 133, seed=1, index=i)
            assert image.shape == (133, 133) and image.dtype == np.uint8
            paper = np.median(image)
            assert paper > 190, (hand.name, name)
            ink = image < paper - 60
            assert 0.015 < ink.mean() < 0.2, (hand.name, name, ink.mean())
            assert image.min() < 90
            ys, xs = np.nonzero(ink)
            assert ys.min() >= 17 and xs.min() >= 17 and ys.max() <= 115 and xs.max() <= 115, (
                hand.name,
                name,
            )


def test_same_seed_same_images_other_seed_other_images(small: Path, tmp_path: Path) -> None:
    generate_greek(tmp_path / "again", **SMALL)
    generate_greek(tmp_path / "other", **{**SMALL, "seed": 1})
    first, again, other = (_pixels(r / "train") for r in (small, tmp_path / "again", tmp_path / "other"))
    for cls in first:
        for a, b, c in zip(first[cls], again[cls], other[cls], strict=True):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c)


def test_an_image_depends_only_on_seed_hand_letter_and_index(small: Path, tmp_path: Path) -> None:
    generate_greek(tmp_path / "more", **{**SMALL, "classes": ["omega", "alpha"], "per_class_train": 6})
    np.testing.assert_array_equal(
        _pixels(small / "train")["alpha"][3], _pixels(tmp_path / "more" / "train")["alpha"][3]
    )


def test_the_test_hand_differs_from_the_training_hand() -> None:
    assert (TEST_HAND.width, TEST_HAND.slant, TEST_HAND.jitter) != (
        TRAIN_HAND.width,
        TRAIN_HAND.slant,
        TRAIN_HAND.jitter,
    )

    def stats(hand):  # (ink share, paper level) over many letters
        images = [draw_letter(c, hand, 133, 0, i) for c in ("alpha", "beta", "gamma") for i in range(6)]
        return np.mean([(im < np.median(im) - 60).mean() for im in images]), np.mean(
            [np.median(im) for im in images]
        )

    (train_ink, train_paper), (test_ink, test_paper) = stats(TRAIN_HAND), stats(TEST_HAND)
    assert test_ink > 1.2 * train_ink  # a broader pen
    assert test_paper > train_paper + 5  # whiter paper
    assert not np.array_equal(draw_letter("beta", TRAIN_HAND), draw_letter("beta", TEST_HAND))


def test_letters_are_distinct_through_the_course_transform() -> None:
    """In pixel space after the course transform, each letter's mean image is nearer to its own samples
    than another letter's mean is (legible, distinct classes), by both hands."""
    transform = SymbolTransform(interpolation="area")
    import torch

    for hand in (TRAIN_HAND, TEST_HAND):
        x = torch.stack(
            [
                torch.stack([transform(torch.tensor(draw_letter(c, hand, 133, 0, i))) for i in range(8)])
                for c in CLASSES
            ]
        ).flatten(2)  # (classes, 8, 784)
        means = x.mean(1)
        dist = ((x[:, :, None] - means[None, None]) ** 2).sum(-1)  # (classes, 8, classes)
        assert (dist.argmin(-1) == torch.arange(len(CLASSES))[:, None]).float().mean() > 0.9, hand.name


# --- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"classes": ["alpha", "digamma"]}, r"classes \['digamma'\] are not drawable letters"),
        ({"classes": "alpha"}, r"give a non-empty list"),
        ({"classes": ["alpha", "alpha"]}, r"lists a letter twice"),
        ({"per_class_train": 1}, r"per_class_train=1 must be >= 2"),
        ({"per_class_test": 0}, r"per_class_test=0 must be >= 1"),
        ({"size": 10}, r"size=10 must be an integer >= 32"),
        ({"seed": -1}, r"seed=-1 must be an integer >= 0"),
        ({"colour": 1}, r"symbols.synthetic has unknown keys \['colour'\]"),
    ],
)
def test_bad_synthetic_settings_name_the_key(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        synthetic_params(override)
    assert synthetic_params(None) == SYNTHETIC_DEFAULTS


def test_embedded_set_is_generated_once_and_resolved(tmp_path: Path) -> None:
    root = embedded_symbols(tmp_path, SMALL)
    assert root == (tmp_path / "greek_synthetic").resolve() and (root / ".visionlab_complete.json").is_file()
    stamp = (root / "train" / "beta" / "beta_001.png").stat().st_mtime_ns
    assert embedded_symbols(tmp_path, SMALL) == root
    assert (root / "train" / "beta" / "beta_001.png").stat().st_mtime_ns == stamp  # reused
    with pytest.raises(DataError, match=r"generated with"):
        embedded_symbols(tmp_path, {**SMALL, "seed": 3})
    both = {"train": "embedded", "test": "auto", "synthetic": SMALL}
    assert resolve_symbol_folders(both, tmp_path) == (str(root / "train"), str(root / "test"))
    assert resolve_symbol_folders({**both, "train": "/my/letters"}, tmp_path) == ("/my/letters", None)
    assert resolve_symbol_folders({**both, "train": "/my/letters", "test": "embedded"}, tmp_path)[1] == str(
        root / "test"
    )
    assert resolve_symbol_folders({**both, "train": None}, tmp_path) == (None, None)
    with pytest.raises(ConfigError, match=r"needs paths.data_dir"):
        resolve_symbol_folders(both, None)


def test_symbol_settings_are_checked_before_data_work(small: Path, tmp_path: Path) -> None:
    check = EmbedTask._check_symbols
    base = {"train": "embedded", "test": "auto", "synthetic": SMALL, "k": 3}
    check(base, folders=True)
    check({**base, "train": str(small / "train"), "test": "embedded"}, folders=True)  # same classes
    check({**base, "train": None}, folders=True)  # off; auto follows
    with pytest.raises(ConfigError, match=r"symbols.k=12 but leave-one-out on 12 train images"):
        check({**base, "k": 12})
    with pytest.raises(ConfigError, match=r"auto is for symbols.test"):
        check({**base, "train": "auto"})
    with pytest.raises(ConfigError, match=r"symbols.test is set but symbols.train is not"):
        check({**base, "train": None, "test": "embedded"})
    (tmp_path / "mine" / "ring").mkdir(parents=True)
    Image.new("L", (40, 40), 230).save(tmp_path / "mine" / "ring" / "a.png")
    with pytest.raises(DataError, match=r"class folders \['ring'\] are not among the training classes"):
        check({**base, "test": str(tmp_path / "mine")}, folders=True)
    with pytest.raises(DataError, match=r"the embedded set .* class folders \['alpha', 'beta', 'gamma'\]"):
        check({**base, "train": str(tmp_path / "mine"), "test": "embedded"}, folders=True)
    with pytest.raises(DataError, match=r"symbols.test=.*nowhere: symbol folder not found"):
        check({**base, "test": str(tmp_path / "nowhere")}, folders=True)


# --- end to end -------------------------------------------------------------------------------------


def test_train_reports_the_embedded_symbol_study_by_default(
    make_cfg, data_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = make_cfg("callbacks.lr_monitor=null", run="greek", base=TINY_EMBED)
    assert (cfg.symbols.train, cfg.symbols.test) == ("embedded", "auto")
    with caplog.at_level("INFO", logger="tasks.embed"):
        train(cfg)
    run = Path(cfg.paths.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("loo_1nn_acc", "loo_knn_acc", "new_1nn_acc", "new_knn_acc"):
        assert 0.0 <= metrics[f"test/symbols/{key}"] <= 1.0
    printed = caplog.text
    assert "27 images in 3 classes (alpha, beta, gamma)" in printed and "greek_synthetic" in printed
    assert "SSD from each class's first image" in printed and "alpha_001" in printed
    assert "leave-one-out accuracy" in printed and "accuracy on the new images" in printed
    assert len(list((data_dir / "greek_synthetic" / "test" / "gamma").glob("*.png"))) == 10
    saved = json.loads((data_dir / "greek_synthetic" / ".visionlab_complete.json").read_text())
    assert saved == SYNTHETIC_DEFAULTS
    events = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    events.Reload()
    assert {"test/symbols/loo_1nn_acc", "test/symbols/new_1nn_acc"} <= hparams_scalars(run)
    assert "test/symbols_ssd_table" in events.Tags()["images"]
    assert any("symbols_report" in tag for tag in events.Tags()["tensors"])
    # evaluate.py on that checkpoint, with nothing else, repeats the study on the embedded set
    results = evaluate(
        make_cfg(
            f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
            name="evaluate",
            run="greek_eval",
            base=TINY_EMBED,
        )
    )
    for key in ("test/acc", "test/symbols/loo_1nn_acc", "test/symbols/new_knn_acc"):
        assert results[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert "accuracy on the new images" in capsys.readouterr().out


def test_symbols_can_be_switched_off(make_cfg) -> None:
    cfg = make_cfg(
        "symbols.train=null",
        "~logger",
        "callbacks.lr_monitor=null",
        "run_test=true",
        run="off",
        base=TINY_EMBED,
    )
    train(cfg)
    metrics = json.loads((Path(cfg.paths.run_dir) / "metrics.json").read_text())
    assert "test/acc" in metrics and not any(k.startswith("test/symbols/") for k in metrics)


@needs_greek
def test_the_course_fixture_and_the_embedded_set_share_the_framing() -> None:
    """Through the course transform, the embedded letters cover about as much of the 28x28 crop as the
    course's own training letters (within a factor of 2), and reach the same paper level."""
    transform = SymbolTransform()
    real = load_symbols(GREEK / "greek_train", transform).images
    import torch

    ours = torch.stack(
        [
            transform(torch.tensor(draw_letter(c, TRAIN_HAND, 133, 0, i)))
            for c in ("alpha", "beta", "gamma")
            for i in range(9)
        ]
    )

    def ink_and_paper(x: torch.Tensor) -> tuple[float, float]:
        pixels = x * 0.3081 + 0.1307  # white strokes on black, [0, 1]
        return float((pixels > 0.5).float().mean()), float(pixels.median())

    (real_ink, real_paper), (our_ink, our_paper) = ink_and_paper(real), ink_and_paper(ours)
    assert 0.5 < our_ink / real_ink < 2.0
    assert abs(real_paper - our_paper) < 0.08
