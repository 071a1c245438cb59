"""Per-task report sections: `build(run) -> [Section]`, the task's own tables, figures and examples."""

from __future__ import annotations

import importlib

from visionlab.report.collect import Run
from visionlab.report.doc import Section

TASKS = ("pose", "defect", "segment", "finetune", "embed")


def task_sections(run: Run) -> list[Section]:
    """The sections of `run.task` ([] for a task without its own module)."""
    if run.task not in TASKS:
        return []
    module = importlib.import_module(f"visionlab.report.sections.{run.task}")
    return list(module.build(run))
