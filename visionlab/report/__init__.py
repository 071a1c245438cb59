"""Reports a person reads: `report.html` (self-contained) and `report.md` for every run folder, for a
comparison of runs of one task, and for a sweep. `python -m visionlab.report RUN [RUN ...] [--out FILE]`.

Everything is read from the folders' own files, so a report can be made again later without the run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_run_report(cfg: Any, run_dir: Path, module: Any, kind: str) -> None:
    """At the end of a train/evaluate run: write tables.json, report.html and report.md into `run_dir`.
    A failure is one warning; the checkpoints and metrics already written are left as they are."""
    try:  # lazy: a report that fails, even to import, is one warning and the run is kept
        from visionlab.report.collect import load_run
        from visionlab.report.record import record_run
        from visionlab.report.render import write_files
        from visionlab.report.run_report import HTML, build_run_report

        record_run(cfg, Path(run_dir), module, kind)
        html, markdown = write_files(build_run_report(load_run(run_dir)), Path(run_dir) / HTML)
        log.info("report: %s (and %s)", html, markdown.name)
    except Exception as err:
        log.warning(
            "report not written (%s: %s); the run's checkpoints and metrics are complete; "
            "retry with: python -m visionlab.report %s",
            type(err).__name__,
            err,
            run_dir,
        )


def write_sweep_report(sweep_dir: Path) -> None:
    """At the end of a multirun: report.html and report.md in the sweep folder (a failure: one warning)."""
    try:
        from visionlab.report.render import write_files
        from visionlab.report.run_report import HTML
        from visionlab.report.sweep_report import build_sweep_report

        sweep_dir = Path(sweep_dir).resolve()
        html, _ = write_files(build_sweep_report(sweep_dir, sweep_dir), sweep_dir / HTML)
        log.info("sweep report: %s", html)
    except Exception as err:
        log.warning(
            "sweep report not written (%s: %s); retry with: python -m visionlab.report %s",
            type(err).__name__,
            err,
            sweep_dir,
        )
