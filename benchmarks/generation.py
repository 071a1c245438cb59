"""First-run cost of the embedded datasets: each task's generator at its default size, timed into a
temporary folder (what `python train.py task=<task>` pays once before its first epoch).

    python -m benchmarks.generation [--tasks pose,defect] [--out generation.json] [override ...]

`generate` is the DataModule's `prepare_data()` (drawing and writing the files in the real format);
`first load` is its `setup("fit")` (reading, decoding, resizing and caching them), paid by every run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmarks.common import TASKS, compose_task, environment, parse_tasks


@dataclass
class GenerationResult:
    """Seconds to generate one embedded dataset and to load it once, and its size on disk."""

    task: str
    params: dict[str, Any]
    generate_s: float
    first_load_s: float
    files: int
    megabytes: float


def time_generation(task: str, overrides: Sequence[str] = ()) -> GenerationResult:
    """Generate `task`'s embedded dataset (its config's `data.synthetic`) into a fresh temporary
    folder and time it, then time the first `setup("fit")` on it."""
    from visionlab.runner import datamodule_from_config

    with tempfile.TemporaryDirectory(prefix=f"visionlab_gen_{task}_") as tmp:
        data_dir = Path(tmp) / "data"
        cfg, _ = compose_task(
            task, ["trainer=cpu", *overrides, f"paths.data_dir={data_dir}"], Path(tmp) / "run"
        )
        datamodule = datamodule_from_config(cfg)
        started = time.perf_counter()
        datamodule.prepare_data()
        generated = time.perf_counter()
        datamodule.setup("fit")
        loaded = time.perf_counter()
        files = [p for p in data_dir.rglob("*") if p.is_file()]
        return GenerationResult(
            task=task,
            params=OmegaConf.to_container(cfg.data.get("synthetic"), resolve=True) or {},
            generate_s=generated - started,
            first_load_s=loaded - generated,
            files=len(files),
            megabytes=sum(p.stat().st_size for p in files) / 2**20,
        )


def markdown_table(results: Sequence[GenerationResult]) -> str:
    """One row per task: parameters, generation and first-load seconds, files and size."""
    lines = [
        "| task | data.synthetic | generate (s) | first load (s) | files | MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        params = ", ".join(f"{k}={v}" for k, v in r.params.items())
        lines.append(
            f"| {r.task} | {params} | {r.generate_s:.1f} | {r.first_load_s:.1f} | {r.files} | {r.megabytes:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides (e.g. pose:data.synthetic.num_images=500)"
    )
    args = parser.parse_args(argv)
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as err:
        parser.error(str(err))

    results = []
    for task in tasks:
        results.append(time_generation(task, args.overrides))
        r = results[-1]
        print(
            f"{task}: generated in {r.generate_s:.1f} s, first load {r.first_load_s:.1f} s", file=sys.stderr
        )
    command = "python -m benchmarks.generation " + shlex.join(argv)
    env = environment(torch.device("cpu"))
    print(f"\n{env['device']}, {env['date']}\n`{command}`\n")
    print(markdown_table(results))
    if args.out is not None:
        doc = {**env, "command": command, "tasks": {r.task: asdict(r) for r in results}}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2))
        print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
