"""Per-task report sections: `build(run) -> [Section]`, the task's own tables, figures and examples.

A task's sections are the module of this package named after it (`sections/<task_name>.py`); a task
without one (e.g. a task of one's own, outside the project) gets the generic sections only."""

from __future__ import annotations

import importlib
import importlib.util

from visionlab.report.collect import Run
from visionlab.report.doc import Section

#: modules of this package that are not a task's sections
_SHARED = ("common",)


def task_sections(run: Run) -> list[Section]:
    """The sections of `run.task` ([] for a task without its own module)."""
    if not run.task.isidentifier() or run.task in _SHARED:
        return []
    name = f"{__name__}.{run.task}"
    if importlib.util.find_spec(name) is None:
        return []
    return list(importlib.import_module(name).build(run))
