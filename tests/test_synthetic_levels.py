"""The embedded sets' difficulty levels: `hard` is the original set pixel for pixel, `easy` differs,
each level has its own folder, and an unknown level is a one-line ConfigError before any data work."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from datamodules.folder import FolderDataModule
from datamodules.lsp import LSPDataModule
from datamodules.synthetic import lsp, shapes
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
    easy, easy_joints, _ = lsp.render_person(np.random.default_rng([0, index]), "easy")
    assert digest(np.asarray(easy)) != digest(np.asarray(image))
    np.testing.assert_array_equal(easy_joints, joints)  # the same person, only the scene is sparser


def test_easy_shape_colour_stands_out_from_its_background():
    rng = np.random.default_rng(0)
    for _ in range(50):
        canvas = shapes._background(64, rng, (0, 2))
        fill = shapes._contrasting_fill(canvas, rng)
        assert abs(fill.mean() - np.asarray(canvas, dtype=float).mean()) >= 70


@pytest.mark.parametrize("module", [FolderDataModule, LSPDataModule])
def test_each_level_has_its_own_folder_and_unknown_levels_fail_first(module, tmp_path):
    easy = module(data_dir=str(tmp_path), synthetic={"level": "easy"})
    hard = module(data_dir=str(tmp_path), synthetic={"level": "hard"})
    assert easy.resolved_root != hard.resolved_root
    assert easy.resolved_root.name.endswith("_easy") and hard.resolved_root.name.endswith("_hard")
    with pytest.raises(ConfigError, match=r"data\.synthetic\.level='medium'"):
        module(data_dir=str(tmp_path), synthetic={"level": "medium"})
    assert not any(tmp_path.iterdir())
