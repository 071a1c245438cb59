"""Checkpoint writes survive a failure mid-save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionlab.checkpointing import AtomicCheckpointIO


def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def killed_midway(checkpoint, filepath):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr("lightning.fabric.plugins.io.torch_io._atomic_save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
