"""Sweep bookkeeping: every job writes `job.json` (overrides, status, error, wall time); the sweep
folder gets `summary.csv` and one plot per swept parameter.

Rebuild the summary of an existing (interrupted, or cluster-run) sweep folder with
`python -m visionlab.sweep <sweep folder> [--metric val/acc]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)
JOB_FILE = "job.json"
#: the run folder this command continues (`resume=`), when it is not the one Hydra created for it
resumed_into: Path | None = None


def read_error(job_dir: Path) -> str:
    """The one-line error a job recorded itself (see `record_failure`), or ''."""
    path = job_dir / "error.txt"
    return path.read_text().strip() if path.is_file() else ""


def record_failure(job_dir: Path, err: BaseException) -> None:
    """Write the job's error line so the summary can show it; the other jobs go on."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "error.txt").write_text(one_line(err) + "\n")


def one_line(value: Any) -> str:
    if isinstance(value, BaseException):
        text = str(value).strip().splitlines()
        return f"{type(value).__name__}: {text[0] if text else ''}"
    return ""


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per job folder: its overrides, status, metrics (final and best) and wall time."""
    rows = []
    for job_dir in sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        record = _load_json(job_dir / JOB_FILE)
        overrides = record.get("overrides") or _overrides_from_hydra(job_dir)
        metrics = _load_json(job_dir / "metrics.json")
        status = record.get("status") or ("failed" if read_error(job_dir) else "incomplete")
        rows.append(
            {
                "job": int(job_dir.name),
                "status": status,
                "error": record.get("error") or read_error(job_dir),
                "wall_s": record.get("wall_s", metrics.get("time/train_s")),
                "params": dict(o.split("=", 1) for o in overrides if "=" in o),
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
    return rows


def write_summary(sweep_dir: Path, metric: str | None = None) -> list[dict[str, Any]]:
    """Write `summary.csv` and `plot_<param>.png` (metric against each swept parameter) into
    `sweep_dir`; returns the rows."""
    sweep_dir = Path(sweep_dir)
    rows = collect_jobs(sweep_dir)
    params = sorted({p for r in rows for p in r["params"]})
    metric_keys = sorted({k for r in rows for k in r["metrics"] if _summary_metric(k)})
    with (sweep_dir / "summary.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "status", *params, *metric_keys, "wall_s", "error"])
        for r in rows:
            writer.writerow(
                [
                    r["job"],
                    r["status"],
                    *(r["params"].get(p, "") for p in params),
                    *(_fmt(r["metrics"].get(k)) for k in metric_keys),
                    _fmt(r["wall_s"]),
                    r["error"],
                ]
            )
    if metric:
        swept = [p for p in params if len({r["params"].get(p) for r in rows}) > 1]
        for param in swept:
            plot_metric_against(
                rows, metric, param, [p for p in swept if p != param], sweep_dir / f"plot_{_safe(param)}.png"
            )
    return rows


def plot_metric_against(
    rows: list[dict[str, Any]], metric: str, param: str, others: list[str], path: Path
) -> None:
    """`metric` against `param`, one line per combination of the other swept parameters (mean with
    min-max band when there are more than 8 combinations)."""
    from visionlab.figures import plt, save_figure  # lazy for speed: matplotlib, only for the figures

    done = [r for r in rows if r["status"] == "completed" and metric in r["metrics"]]
    if not done:
        return
    xs = sorted({r["params"][param] for r in done}, key=_sort_key)
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in done:
        label = ", ".join(f"{o}={r['params'].get(o)}" for o in others) or metric
        groups[label][r["params"][param]].append(float(r["metrics"][metric]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    positions = {x: i for i, x in enumerate(xs)}
    if len(groups) <= 8:
        for label, values in sorted(groups.items()):
            pts = sorted(values.items(), key=lambda kv: _sort_key(kv[0]))
            ax.plot([positions[x] for x, _ in pts], [sum(v) / len(v) for _, v in pts], "o-", label=label)
        ax.legend(fontsize=7)
    else:
        per_x = defaultdict(list)
        for values in groups.values():
            for x, v in values.items():
                per_x[x] += v
        means = [sum(per_x[x]) / len(per_x[x]) for x in xs]
        ax.fill_between(range(len(xs)), [min(per_x[x]) for x in xs], [max(per_x[x]) for x in xs], alpha=0.25)
        ax.plot(range(len(xs)), means, "o-", label=f"mean over {len(groups)} settings of {', '.join(others)}")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _summary_metric(key: str) -> bool:
    return (
        key.startswith(("val/", "test/", "best/", "train/"))
        and "/acc_class/" not in key
        and "/iou/" not in key
    )


def _overrides_from_hydra(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _sort_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def main(argv: list[str] | None = None) -> None:
    """Rebuild `summary.csv` and plots of an existing sweep folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--metric", default=None, help="metric to plot (default: the sweep's optimized_metric)"
    )
    args = parser.parse_args(argv)
    metric = args.metric or _optimized_metric(args.sweep_dir)
    rows = write_summary(args.sweep_dir, metric)
    counts = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    print(f"{args.sweep_dir / 'summary.csv'}: {len(rows)} jobs {dict(counts)}; plotted {metric}")


def _optimized_metric(sweep_dir: Path) -> str | None:
    for cfg_path in sorted(sweep_dir.glob("*/config.yaml")):
        value = OmegaConf.load(cfg_path).get("optimized_metric")
        if value:
            return str(value)
    return None


if __name__ == "__main__":
    main()
