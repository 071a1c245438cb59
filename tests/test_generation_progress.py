"""What a run prints while it generates an embedded set: a start line (name, size, destination) and an
end line in logs and pipes, and a progress bar in a terminal."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from datamodules.synthetic import ensure_generated, progress
from datamodules.synthetic.shapes import generate_shapes

#: 12 classes x 2 images of 16 px: 24 images in well under a second
TINY = {"per_class": {"train": 1, "val": 1}, "image_size": 16, "seed": 0, "level": "easy"}


def test_generation_logs_one_start_and_one_end_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="datamodules.synthetic"):
        ensure_generated(tmp_path / "shapes_tiny", generate_shapes, **TINY)
        ensure_generated(tmp_path / "shapes_tiny", generate_shapes, **TINY)  # reused: nothing printed
    lines = [r.getMessage() for r in caplog.records if r.name == "datamodules.synthetic"]
    assert len(lines) == 2, lines
    assert lines[0] == f"generating the embedded set shapes_tiny: 24 images into {tmp_path / 'shapes_tiny'}"
    assert lines[1].startswith("generated shapes_tiny: 24 images in ")


def test_generation_shows_a_bar_in_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    screen = io.StringIO()
    make_bar = progress._rich_bar

    def bar_on_screen():
        bar = make_bar()
        bar.live.console = Console(file=screen, force_terminal=True, width=100)
        return bar

    monkeypatch.setattr(progress, "_terminal", lambda: True)
    monkeypatch.setattr(progress, "_rich_bar", bar_on_screen)
    ensure_generated(tmp_path / "shapes_tiny", generate_shapes, **TINY)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # without colours and cursor moves
    assert "shapes_tiny" in shown and "24/24" in shown
    assert (tmp_path / "shapes_tiny" / "train" / "ring" / "0000.png").is_file()


def test_an_interrupted_generation_says_so_and_leaves_no_bar(tmp_path: Path, caplog) -> None:
    def interrupted(root: Path) -> None:
        progress.announce(10)
        progress.advance(3)
        raise KeyboardInterrupt

    with caplog.at_level(logging.INFO, logger="datamodules.synthetic"), pytest.raises(KeyboardInterrupt):
        ensure_generated(tmp_path / "set", interrupted)
    assert "generation of set stopped after" in caplog.text
    assert progress._current is None and not (tmp_path / "set").exists()
