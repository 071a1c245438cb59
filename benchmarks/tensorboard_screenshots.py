"""Look at TensorBoard as a user does: one tiny run of every task into one logdir (or a logdir you
give), TensorBoard served on 127.0.0.1, and each dashboard screenshotted by headless Chromium.

    python -m benchmarks.tensorboard_screenshots [--logdir outputs] [--out tensorboard_screenshots]
                                                 [--tasks pose,embed] [--dashboards scalars,hparams]
                                                 [--size 1600x2400]

Needs Chromium (Debian: `apt-get install chromium`). Writes <out>/<dashboard>.png and prints each path.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: screenshot name -> the page's URL fragment; TensorBoard opens the first two tag groups only, so two
#: views filter the tags to show the train/val curves and every task's validation figures at once
DASHBOARDS = {
    "timeseries": "timeseries",
    "scalars": "scalars",
    "scalars_train_val": "scalars&tagFilter=%5E(train%7Cval)%2F",
    "images": "images",
    "images_val": "images&tagFilter=%5Eval%2F",
    "pr_curves": "pr_curves",
    "hparams": "hparams",
    "projector": "projector",
}
_COMMON = [
    "data.num_workers=0",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]
#: a run of each task small enough for seconds on a CPU, on embedded data of a few dozen images
TINY = {
    "finetune": [
        "data.image_size=32",
        "data.synthetic.image_size=32",
        "data.synthetic.per_class={train: 6, val: 3, test: 3}",
        "data.batch_size=24",
    ],
    "embed": [
        "data.synthetic={num_train: 400, num_test: 100, seed: 0}",
        "data.batch_size=32",
        "optimizer=adam",
        "optimizer.momentum=null",  # the task's SGD momentum
        "optimizer.lr=0.003",
        "projector.digits=50",
    ],
    "defect": [
        "data.synthetic={num_train: 20, num_test_good: 4, num_test_per_defect: 4, size: 64, seed: 0}",
        "data.val_fraction=0.2",
        "model.input_size=32",
        "model.channels=[8,16,32]",
        "model.bottleneck=16",
        "data.batch_size=8",
    ],
    "segment": [
        "data.synthetic={num_images: 24, size: 64, seed: 0, val_fraction: 0.25}",
        "data.image_size=32",
        "data.batch_size=6",
        "model.encoder_stages=4",
        "model.decoder_channels=[32,16,16,8,8]",
    ],
    "pose": [
        "data.image_size=64",
        "model.width=0.125",
        "data.synthetic.num_images=48",
        "data.train_count=24",
        "data.val_fraction=0.25",
        "data.batch_size=8",
    ],
}


def _local_runs(port: int) -> list[str]:
    """The runs the TensorBoard server on 127.0.0.1:`port` has loaded (a loopback request only)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/data/runs")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def tiny_runs(logdir: Path, tasks: Sequence[str]) -> None:
    """Train each task once (tiny) with its run folder under `logdir/<task>/`."""
    data = logdir.parent / "data"
    for task in tasks:
        command = [sys.executable, "train.py", f"task={task}", *_COMMON, *TINY[task]]
        command += [f"paths.output_dir={logdir}", f"paths.data_dir={data}"]
        print(f"training a tiny {task} run ...", flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(logdir: Path, port: int, log: Path, timeout_s: float = 180.0) -> subprocess.Popen:
    """TensorBoard on 127.0.0.1:`port` (its output in `log`), returned once it lists the logdir's runs."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    with log.open("w") as out:
        command += ["--port", str(port), "--load_fast=false"]
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with {server.returncode}; see {log}")
        try:
            runs = _local_runs(port)
        except (OSError, http.client.HTTPException, ValueError):
            runs = []
        if runs:
            time.sleep(5)  # the first reload may still be reading the last runs
            return server
        time.sleep(1)
    server.terminate()
    raise RuntimeError(f"TensorBoard showed no run of {logdir} within {timeout_s:.0f} s; see {log}")


def chromium() -> str:
    """The Chromium (or Chrome) executable; a clear error when none is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("error: no Chromium found; install it (Debian: apt-get install chromium)")


def screenshot(browser: str, url: str, png: Path, size: tuple[int, int], wait_ms: int) -> None:
    """One headless screenshot of `url` after `wait_ms` of page time (the dashboards load their data)."""
    command = [
        browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader", f"--window-size={size[0]},{size[1]}",
        f"--virtual-time-budget={wait_ms}", f"--screenshot={png}", url,
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    subprocess.run(command, check=True, capture_output=True, timeout=180)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, make the logdir if none is given, serve it and take the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="an existing logdir (default: tiny runs of --tasks)")
    parser.add_argument("--out", type=Path, default=Path("tensorboard_screenshots"))
    parser.add_argument("--tasks", default=",".join(TINY), help="tasks of the tiny runs (comma-separated)")
    parser.add_argument(
        "--dashboards", default=",".join(DASHBOARDS), help="names of DASHBOARDS or URL fragments"
    )
    parser.add_argument("--size", default="1600x1100", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("--wait-ms", type=int, default=20000, help="page time before each screenshot")
    args = parser.parse_args(argv)
    browser = chromium()
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="tb_screens_") as tmp:
        logdir = args.logdir
        if logdir is None:
            logdir = Path(tmp) / "outputs"
            tiny_runs(logdir, [t for t in args.tasks.split(",") if t])
        logdir = logdir.expanduser().resolve()
        args.out.mkdir(parents=True, exist_ok=True)
        port = free_port()
        server = serve(logdir, port, Path(tmp) / "tensorboard.log")
        try:
            for name in args.dashboards.split(","):
                png = args.out.resolve() / f"{name}.png"
                page = f"http://127.0.0.1:{port}/#{DASHBOARDS.get(name, name)}"
                screenshot(browser, page, png, size, args.wait_ms)
                print(png, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
