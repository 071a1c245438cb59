"""The embedded sets' difficulty levels: `hard` is the original set pixel for pixel, `easy` differs,
each level has its own folder, and an unknown level is a one-line ConfigError before any data work."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from datamodules.folder import FolderDataModule
from datamodules.lsp import LSPDataModule
from datamodules.synthetic import lsp, shapes, voc
from datamodules.voc import VOCDataModule
from visionlab.errors import ConfigError


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


# Digests of images drawn by the generators before levels existed (same seeds).
ORIGINAL_SHAPES = {"arrow": "2b635db9a406bca9", "star": "858399e1956d7cd8"}
ORIGINAL_PEOPLE = {0: ("4b2214a6e9d8cd51", "454bcbbb4911d0b9"), 1: ("ccda6b870f136845", "c6a0c7cf2856efca")}


@pytest.mark.parametrize("name", sorted(ORIGINAL_SHAPES))
def test_hard_shapes_are_the_original_images(name):
    image = shapes.draw_shape(name, 64, np.random.default_rng([0, 0, 3]), "hard")
    assert digest(image) == ORIGINAL_SHAPES[name]
    easy = shapes.draw_shape(name, 64, np.random.default_rng([0, 0, 3]), "easy")
    assert easy.shape == image.shape and digest(easy) != digest(image)


@pytest.mark.parametrize("index", sorted(ORIGINAL_PEOPLE))
def test_hard_people_are_the_original_images(index):
    image, joints, _ = lsp.render_person(np.random.default_rng([0, index]), "hard")
    assert (digest(np.asarray(image)), digest(joints)) == ORIGINAL_PEOPLE[index]
    easy, _, _ = lsp.render_person(np.random.default_rng([0, index]), "easy")
    assert easy.size == image.size and digest(np.asarray(easy)) != digest(np.asarray(image))


def _offset_and_fill(image, joints) -> tuple[float, float]:
    """How far the joints' box centre is from the image centre, and how much of the frame it spans."""
    size = np.array(image.size, dtype=float)
    centre = (joints.min(0) + joints.max(0)) / 2
    return float(np.max(np.abs(centre - size / 2) / size)), float(np.max(np.ptp(joints, axis=0) / size))


def test_easy_people_are_framed_like_lsp_crops():
    offsets, fills = {}, {}
    for level in ("easy", "hard"):
        drawn = [lsp.render_person(np.random.default_rng([0, i]), level)[:2] for i in range(20)]
        offsets[level], fills[level] = zip(*(_offset_and_fill(im, j) for im, j in drawn), strict=True)
    assert max(offsets["easy"]) < 0.1 < max(offsets["hard"])  # near the centre, not anywhere
    assert min(fills["easy"]) > 0.6 and np.mean(fills["easy"]) > np.mean(fills["hard"]) + 0.05


def test_easy_shape_colour_stands_out_from_its_background():
    rng = np.random.default_rng(0)
    for _ in range(50):
        canvas = shapes._background(64, rng, (0, 2))
        fill = shapes._contrasting_fill(canvas, rng)
        assert abs(fill.mean() - np.asarray(canvas, dtype=float).mean()) >= 70


# Digests of segment scenes drawn before levels existed (seed 0, 160 px): image, labels.
ORIGINAL_SCENES = {0: ("0d6907bcee2bef9f", "e798db94c015f3b6"), 1: ("deb624c60d8b0de7", "75fd0dcf45c0e72a")}


@pytest.mark.parametrize("index", sorted(ORIGINAL_SCENES))
def test_hard_scenes_are_the_original_images(index):
    image, labels = voc.draw_scene(np.random.default_rng([0, index]), 160, "hard")
    assert (digest(image), digest(labels)) == ORIGINAL_SCENES[index]


def _colour_accuracy(level: str) -> float:
    """How often an object's mean colour alone names its class (nearest class-mean colour, 40 scenes)."""
    rng = np.random.default_rng(0)
    samples: list[tuple[int, np.ndarray]] = []
    for _ in range(40):
        image, labels = voc.draw_scene(rng, 96, level)
        samples += [(c, image[labels == c].mean(0)) for c in np.unique(labels).tolist() if c not in (0, 255)]
    centres = {c: np.mean([m for k, m in samples if k == c], axis=0) for c, _ in samples}
    hits = [min(centres, key=lambda k: np.linalg.norm(m - centres[k])) == c for c, m in samples]
    return float(np.mean(hits))


def test_easy_scenes_colour_each_class_from_its_own_family():
    assert _colour_accuracy("easy") > 0.9
    assert _colour_accuracy("hard") < 0.4  # hard: one palette for all, shape is the main cue


@pytest.mark.parametrize("module", [FolderDataModule, LSPDataModule, VOCDataModule])
def test_each_level_has_its_own_folder_and_unknown_levels_fail_first(module, tmp_path):
    easy = module(data_dir=str(tmp_path), synthetic={"level": "easy"})
    hard = module(data_dir=str(tmp_path), synthetic={"level": "hard"})
    assert easy.resolved_root != hard.resolved_root
    assert "_easy_" in easy.resolved_root.name and "_hard_" in hard.resolved_root.name
    other = module(data_dir=str(tmp_path), synthetic={"level": "easy", "seed": 1})
    assert other.resolved_root != easy.resolved_root  # other parameters, another folder
    with pytest.raises(ConfigError, match=r"data\.synthetic\.level='medium'"):
        module(data_dir=str(tmp_path), synthetic={"level": "medium"})
    assert not any(tmp_path.iterdir())
