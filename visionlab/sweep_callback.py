"""The Hydra callback of every multirun (`conf/hydra/default.yaml`): records each job's outcome in its
folder, then writes the sweep's summary (`visionlab.sweep`) and report (`visionlab.report`). It sits
above both, so neither imports the other's caller."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from visionlab import sweep
from visionlab.report import write_sweep_report

log = logging.getLogger("visionlab.sweep")  # the summary line, as visionlab.sweep logged it


class SweepSummary(Callback):
    """Hydra callback: records each job's outcome and writes the summary when a multirun ends."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started[str(config.hydra.runtime.output_dir)] = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        job_dir = Path(str(config.hydra.runtime.output_dir))
        started = self._started.pop(str(job_dir), time.time())
        job_dir = sweep.resumed_into or job_dir  # a resume records itself in the folder it continued
        value = job_return._return_value
        failed = job_return.status == JobStatus.FAILED or isinstance(value, BaseException)
        error = sweep.read_error(job_dir) if not failed else sweep.one_line(value)
        record = {
            "job": job_dir.name,
            "overrides": list(job_return.overrides or []),
            "status": "failed" if failed or error else "completed",
            "error": error,
            "return_value": value if isinstance(value, (int, float)) and not (failed or error) else None,
            "wall_s": round(time.time() - started, 3),
        }
        (job_dir / sweep.JOB_FILE).write_text(json.dumps(record, indent=2))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        metric = str(config.get("optimized_metric") or "")
        rows = sweep.write_summary(sweep_dir, metric or None)
        failed = sum(r["status"] != "completed" for r in rows)
        log.info(
            "sweep summary: %s (%d jobs, %d not completed)", sweep_dir / "summary.csv", len(rows), failed
        )
        write_sweep_report(sweep_dir)
