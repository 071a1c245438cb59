"""Augmentation alone: img/s of a task's CPU recipe (Albumentations, per sample) against a GPU recipe
(kornia, batched on the device), whole and per op, on random uint8 images of the task's input size.

    python -m benchmarks.augment                     # pose: pose_augmented vs pose_augmented_gpu
    python -m benchmarks.augment --task pose --size 220 --batch 128 --workers 0,15 --out aug.json
    python -m benchmarks.augment --task segment --cpu-experiment segment_fcn_improved --gpu-spec '[...]'

The CPU number is one process (`--workers 0`) or a DataLoader with that many worker processes; the GPU
number is one batch at a time with the device synchronised around the timed calls. Joints (pose) and
masks (segment) are carried along as in training, so their cost is included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

import datamodules  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations is imported)
from datamodules.gpu_augment import build_gpu_augment
from datamodules.lsp import augment_sample
from datamodules.lsp_format import LSP_FLIP_PERMUTATION
from datamodules.transforms import build_augment
from visionlab.keys import tasks_available

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
#: default recipes per task: (CPU experiment, GPU experiment)
RECIPES = {"pose": ("pose_augmented", "pose_augmented_gpu")}


def recipe(task: str, experiment: str | None) -> dict[str, Any]:
    """`data` of `python train.py task=<task> [experiment=<experiment>]` as plain containers."""
    overrides = [f"task={task}"] + ([f"experiment={experiment}"] if experiment else [])
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[return-value]


class CpuSamples(Dataset):
    """`count` random samples of `size` px through the task's Albumentations pipeline, one per item."""

    def __init__(self, task: str, specs: list[dict[str, Any]], size: int, count: int) -> None:
        self.task, self.size, self.count = task, size, count
        kwargs: dict[str, Any] = {}
        if task == "pose":
            kwargs = {
                "keypoint_params": A.KeypointParams(format="xy", remove_invisible=False),
                "save_applied_params": True,
            }
        self.augment = build_augment(specs, **kwargs)
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (8, size, size, 3), dtype=np.uint8)
        self.joints = rng.uniform(0, size, (8, 14, 2)).astype(np.float32)
        self.masks = rng.integers(0, 5, (8, size, size), dtype=np.uint8)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        assert self.augment is not None
        k = index % len(self.images)
        if self.task == "pose":
            image = augment_sample(self.augment, self.images[k], self.joints[k], np.ones(14, bool))[0]
        elif self.task == "segment":
            image = self.augment(image=self.images[k], mask=self.masks[k])["image"]
        else:
            image = self.augment(image=self.images[k])["image"]
        return torch.from_numpy(np.ascontiguousarray(image))


def time_cpu(samples: CpuSamples, workers: int, batch: int) -> float:
    """img/s of the CPU pipeline: a plain loop (0 workers) or a DataLoader with `workers` processes."""
    if workers == 0:
        for i in range(min(16, len(samples))):  # warm-up
            samples[i]
        start = time.perf_counter()
        for i in range(len(samples)):
            samples[i]
        return len(samples) / (time.perf_counter() - start)
    loader = DataLoader(
        samples, batch_size=batch, num_workers=workers, persistent_workers=True, prefetch_factor=4
    )
    for _ in loader:  # warm-up pass: starts the workers
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(samples) / (time.perf_counter() - start)


def time_gpu(
    task: str, specs: list[dict[str, Any]], size: int, batch: int, device: torch.device, steps: int
) -> float:
    """img/s of the kornia pipeline `specs` on `batch` images of `size` px on `device`."""
    augment = build_gpu_augment(specs, mirror_permutation=LSP_FLIP_PERMUTATION if task == "pose" else None)
    assert augment is not None
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    joints = torch.rand(batch, 14, 2, device=device) * size if task == "pose" else None
    visible = torch.ones(batch, 14, dtype=torch.bool, device=device) if task == "pose" else None
    masks = (
        torch.randint(0, 5, (batch, size, size), dtype=torch.uint8, device=device)
        if task == "segment"
        else None
    )

    def call() -> None:
        augment(images, joints, visible, masks)

    return _timed(call, steps, device) * batch


def _timed(call: Callable[[], None], steps: int, device: torch.device) -> float:
    """Calls per second of `call` (3 warm-up calls; the device is synchronised around the timed ones)."""
    for _ in range(3):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="pose", choices=tasks_available())
    parser.add_argument(
        "--cpu-experiment", default=None, help="experiment whose data.augment is the CPU recipe"
    )
    parser.add_argument(
        "--gpu-experiment", default=None, help="experiment whose data.gpu_augment is the GPU recipe"
    )
    parser.add_argument(
        "--gpu-spec", default=None, help="the GPU recipe as a YAML list (instead of an experiment)"
    )
    parser.add_argument("--size", type=int, default=None, help="image size (default: the CPU recipe's)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--samples", type=int, default=512, help="images per CPU measurement")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per GPU measurement")
    parser.add_argument(
        "--workers", default="0", help="comma-separated DataLoader worker counts for the CPU path"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    cpu_exp, gpu_exp = RECIPES.get(args.task, (None, None))
    cpu_data = recipe(args.task, args.cpu_experiment or cpu_exp)
    gpu_specs = (
        yaml.safe_load(args.gpu_spec)
        if args.gpu_spec
        else recipe(args.task, args.gpu_experiment or gpu_exp).get("gpu_augment")
    )
    cpu_specs, size = cpu_data.get("augment") or [], args.size or int(cpu_data.get("image_size", 64))
    device = torch.device(args.device)
    rows: list[tuple[str, str, float]] = []

    def median(measure: Callable[[], float]) -> float:
        return statistics.median(measure() for _ in range(args.repeats))

    if cpu_specs:
        samples = CpuSamples(args.task, cpu_specs, size, args.samples)
        for workers in (int(w) for w in args.workers.split(",")):
            rows.append(
                (
                    f"CPU Albumentations, {workers} workers",
                    "whole recipe",
                    median(lambda w=workers: time_cpu(samples, w, args.batch)),
                )
            )
    if gpu_specs:
        where = f"{device.type} kornia, batch {args.batch}"
        rows.append(
            (
                where,
                "whole recipe",
                median(lambda: time_gpu(args.task, gpu_specs, size, args.batch, device, args.steps)),
            )
        )
        for spec in gpu_specs:
            single = {**spec, "p": 1.0}
            rows.append(
                (
                    where,
                    spec["name"],
                    median(lambda s=single: time_gpu(args.task, [s], size, args.batch, device, args.steps)),
                )
            )

    print(
        f"task {args.task}, {size} px, device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{os.cpu_count()} CPU cores'})"
    )
    print("| path | ops | img/s |\n|---|---|---:|")
    for path, ops, rate in rows:
        print(f"| {path} | {ops} | {rate:,.0f} |")
    if args.out:
        doc = {
            "task": args.task,
            "size": size,
            "device": str(device),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(
                ["python -m benchmarks.augment", *(argv if argv is not None else sys.argv[1:])]
            ),
            "rows": [{"path": p, "ops": o, "images_per_second": r} for p, o, r in rows],
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
