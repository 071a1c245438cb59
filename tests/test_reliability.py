"""Checkpoint writes survive a failure mid-save."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionlab.checkpointing import AtomicCheckpointIO
from visionlab.errors import ConfigError


def test_a_failed_save_leaves_the_previous_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def killed_midway(checkpoint, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


def _final(run: Path) -> dict[str, float]:
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    return {k: metrics[k] for k in ("train/loss", "val/loss", "val/acc", "test/acc")}


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(make_cfg) -> None:
    from visionlab.runner import train

    # a per-epoch schedule: a per-step one (onecycle) spans max_steps, which stops the first run here
    train(make_cfg("trainer.max_epochs=3", "scheduler=cosine", run="straight"))
    # stopped after epoch 0's three steps, with the same schedule (max_epochs) as the straight run
    first = make_cfg(
        "trainer.max_epochs=3",
        "scheduler=cosine",
        "+trainer.max_steps=3",
        "run_test=false",
        run="interrupted",
    )
    train(first)
    run = Path(first.paths.run_dir)
    train(make_cfg(f"resume={run}", "trainer.max_epochs=3", "scheduler=cosine", run="unused"))
    straight = _final(Path(make_cfg(run="straight").paths.run_dir))
    assert _final(run) == straight


def test_ckpt_path_last_continues_the_newest_run_of_the_task(make_cfg, tmp_path: Path) -> None:
    from visionlab.runner import train

    outputs = [f"paths.output_dir={tmp_path}", "trainer.max_epochs=1", "run_test=false"]
    older = make_cfg(*outputs, run="finetune/older")
    train(older)
    newer = make_cfg(*outputs, run="finetune/newer")
    train(newer)
    train(
        make_cfg(*outputs[:1], "ckpt_path=last", "trainer.max_epochs=2", "run_test=false", run="finetune/x")
    )
    epochs = {
        name: torch.load(tmp_path / "finetune" / name / "checkpoints" / "last.ckpt", weights_only=True)[
            "epoch"
        ]
        for name in ("older", "newer")
    }
    assert epochs == {"older": 0, "newer": 1}  # the newest run went on in place; the older is untouched
    with pytest.raises(ConfigError, match=r"ckpt_path=last / resume=last: no run under .*empty/finetune has"):
        train(make_cfg(f"paths.output_dir={tmp_path / 'empty'}", "resume=last"))


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(
    make_cfg, data_dir: Path, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import TINY_FINETUNE
    from visionlab.runner import train

    train(make_cfg("trainer.max_epochs=4", run="straight"))
    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "train.py",
        *TINY_FINETUNE,
        "trainer.max_epochs=4",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=True)["epoch"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    train(make_cfg(f"resume={run}", "trainer.max_epochs=4", run="unused"))
    assert _final(run) == _final(tmp_path / "straight")


def test_random_image_modes_and_sizes_load_or_fail_by_name(tmp_path: Path) -> None:
    """Fuzz-style: grayscale, RGBA, palette, 16-bit PNG, CMYK JPEG, 1-bit, tiny and odd sizes, and
    truncated files; every one loads to (32, 32, 3) uint8 or raises a DataError naming it."""
    import numpy as np
    from PIL import Image

    from datamodules.folder import load_resized
    from visionlab.errors import DataError

    rng = np.random.default_rng(0)
    modes = ["L", "RGB", "RGBA", "P", "I;16", "CMYK", "1"]
    paths = []
    for i in range(120):
        mode = modes[i % len(modes)]
        w, h = (int(v) for v in rng.integers(1, 90, 2))
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
        else:
            img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
        path = tmp_path / f"{i:03d}.{'jpg' if mode == 'CMYK' else 'png'}"
        img.save(path)
        if i % 10 == 9:  # truncate every tenth file
            path.write_bytes(path.read_bytes()[: max(8, path.stat().st_size // 3)])
        paths.append(path)
    loaded = failed = 0
    for path in paths:
        try:
            image = load_resized(path, 32)
        except DataError as err:
            assert path.name in str(err)
            failed += 1
            continue
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8, path.name
        loaded += 1
    assert loaded >= 100 and failed >= 1


@pytest.mark.slow
def test_twenty_resumes_leave_one_coherent_history(make_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from visionlab.runner import train

    first = make_cfg("trainer.max_epochs=1", "run_test=false", run="long")
    train(first)
    run = Path(first.paths.run_dir)
    for epochs in range(2, 22):
        train(
            make_cfg(f"resume={run}", f"trainer.max_epochs={epochs}", "run_test=false", run=f"unused{epochs}")
        )
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("val/acc")]
    assert len(steps) == 21 and steps == sorted(set(steps))  # one point per epoch, none repeated
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 20
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
