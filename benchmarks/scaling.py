"""How a task's training cost grows with its dataset: img/s of the real pipeline and the peak resident
memory of the process, at several embedded-set sizes, with the decoded images cached in memory and without.

    python -m benchmarks.scaling [--task pose] [--sizes 1000,4000,16000] [--cache true,false]
                                 [--steps 20] [--warmup 5] [--repeats 3] [--data-dir DIR] [--out DIR] [override ...]

Every set is generated first (in this process, not measured). Then each (size, cache) pair runs
`python -m benchmarks.throughput --tasks <task> ...` in a process of its own, which reports its own
peak resident memory (`VmHWM`): the imports, the datamodule's setup (with the cache: every decoded
training image), the model, and the bound / real / hand-loop measurements, `--repeats` times
(img/s: the median). `--out` gets `scaling.json` and `scaling.md`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import compose_task, environment
from visionlab.runner import datamodule_from_config

#: the key of the embedded-set size of each task that can cache its decoded images
SIZE_KEYS = {
    "pose": "data.synthetic.num_images",
    "segment": "data.synthetic.num_images",
    "defect": "data.synthetic.num_train",
}


def parse_list(text: str, kind: type, name: str) -> list[Any]:
    """`1000,4000` -> [1000, 4000]; `true,false` -> [True, False]; anything else is a ValueError."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if kind is bool:
        if not items or any(t not in ("true", "false") for t in items):
            raise ValueError(f"{name} {text!r}: expected a comma-separated list of true/false")
        return [t == "true" for t in items]
    try:
        values = [int(t) for t in items]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} {text!r}: expected a comma-separated list of positive integers")
    return values


def generate(task: str, overrides: Sequence[str]) -> None:
    """Writes the embedded set these overrides name, if it is not on disk yet (not part of any
    measurement; `prepare_data` only: nothing is read or decoded in this process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg, _ = compose_task(task, overrides, Path(tmp))
        datamodule_from_config(cfg).prepare_data()


def measure(task: str, overrides: Sequence[str], steps: int, warmup: int, repeats: int) -> dict[str, Any]:
    """One configuration in a process of its own: its throughput row (img/s) and that process's peak
    resident memory in MiB (what it reports about itself: the parent's memory does not count)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "throughput.json"
        command = [sys.executable, "-m", "benchmarks.throughput", "--trainer", "cpu", "--tasks", task,
                   "--steps", str(steps), "--warmup", str(warmup), "--repeats", str(repeats), "--out", str(out),
                   *overrides]  # fmt: skip
        child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if child.returncode != 0:
            tail = child.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{shlex.join(command)} failed ({child.returncode}): {tail[0]}")
        doc = json.loads(out.read_text())
    row = doc["tasks"][task]
    return {
        "real": row["real"],
        "loop": row["loop"],
        "bound": row["bound"],
        "peak_rss_mib": doc["peak_rss_mib"],
    }


def markdown(rows: Sequence[dict[str, Any]], task: str) -> str:
    """The table of every configuration."""
    lines = [
        f"| {task} images | cache_images | (b) real img/s | (c) loop img/s | peak RSS (MiB) |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['images']:,} | {str(r['cache']).lower()} | {r['real']:,.1f} | {r['loop']:,.1f} "
            f"| {r['peak_rss_mib']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--task", default="pose", choices=sorted(SIZE_KEYS))
    parser.add_argument("--sizes", default="1000,4000,16000", help="embedded-set sizes, comma-separated")
    parser.add_argument("--cache", default="true,false", help="data.cache_images values, comma-separated")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per configuration (median)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="where the sets are generated")
    parser.add_argument("--out", type=Path, default=None, help="folder for scaling.json and scaling.md")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every configuration")
    args = parser.parse_args(argv)
    try:
        sizes = parse_list(args.sizes, int, "--sizes")
        caches = parse_list(args.cache, bool, "--cache")
    except ValueError as err:
        parser.error(str(err))
    if min(args.steps, args.warmup, args.repeats) < 1:
        parser.error("--steps, --warmup and --repeats must be at least 1")

    rows: list[dict[str, Any]] = []
    for size in sizes:
        common = [
            f"paths.data_dir={args.data_dir.resolve()}",
            f"{SIZE_KEYS[args.task]}={size}",
            *args.overrides,
        ]
        generate(args.task, ["trainer=cpu", *common])
        for cache in caches:
            print(
                f"[{args.task}] {size} images, cache_images={str(cache).lower()}", file=sys.stderr, flush=True
            )
            overrides = [*common, f"data.cache_images={str(cache).lower()}"]
            result = measure(args.task, overrides, args.steps, args.warmup, args.repeats)
            rows.append({"images": size, "cache": cache, **result})
            print(
                f"  real {result['real']:,.1f} img/s, peak RSS {result['peak_rss_mib']:,.0f} MiB",
                file=sys.stderr,
            )

    command = "python -m benchmarks.scaling " + shlex.join(argv)
    table = markdown(rows, args.task)
    print(f"\n`{command}`\n\n{table}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = {**environment(torch.device("cpu")), "command": command, "rows": rows}
        (args.out / "scaling.json").write_text(json.dumps(doc, indent=2))
        (args.out / "scaling.md").write_text(f"# Scaling of {args.task}\n\n{doc['date']}, {doc['device']}\n\n"
                                             f"`{command}`\n\n{table}\n")  # fmt: skip
        print(f"\nwritten: {args.out / 'scaling.md'}, {args.out / 'scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
