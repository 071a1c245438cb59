"""The report of one run folder: command, settings that differ from the task's defaults, curves, the
task's tables and examples, every metric, time and machine."""

from __future__ import annotations

import os
from pathlib import Path

from visionlab.report.collect import Run
from visionlab.report.doc import Cell, Details, Figure, Link, Report, Section, Table, Text
from visionlab.report.plots import Lines, curves_png
from visionlab.report.sections import task_sections
from visionlab.report.sections.common import split_prefix
from visionlab.report.settings import changed_settings, task_defaults

HTML, MARKDOWN = "report.html", "report.md"


def build_run_report(run: Run) -> Report:
    """The page of `run`."""
    report = Report(
        title=f"{run.task}: {'training' if run.kind == 'train' else 'evaluation'} run {run.name}",
        subtitle=shown_path(run.folder),
        facts=facts(run),
    )
    report.section("Command", Text(run.command, code=True), trained_from(run))
    report.section("Results", headline_table(run), split_note(run))
    report.section("Settings that differ from the task's defaults", *settings_blocks(run))
    if run.kind == "train":
        report.sections.append(curves_section(run))
    report.sections.extend(s for s in task_sections(run) if s.blocks)
    report.section(
        "All metrics", Details(f"every value of metrics.json ({len(run.metrics)})", [metrics_table(run)])
    )
    report.section("Time and machine", machine_table(run))
    return report


def shown_path(folder: Path) -> str:
    """`folder` relative to the current directory when it is below it (outputs/<task>/<run>), else absolute."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def facts(run: Run) -> list[tuple[str, Cell]]:
    out: list[tuple[str, Cell]] = [("task", run.task), ("entry point", f"{run.kind}.py")]
    out += [(k, run.metrics[k]) for k in run.headline()[:4]]
    if run.train_seconds is not None:
        out.append(("training time", duration(run.train_seconds)))
    device = (run.info.get("machine") or {}).get("gpu") or (run.info.get("machine") or {}).get("device")
    if device:
        out.append(("device", str(device)))
    return out


def trained_from(run: Run) -> Table | None:
    """For an evaluation: the checkpoint, the split, and the training run (linked to its report)."""
    ckpt = run.config.get("ckpt_path")
    if run.kind != "evaluate" or not ckpt:
        return None
    folder = Path(str(ckpt)).expanduser().parent.parent
    page = folder / HTML
    trained: Cell = (
        Link(shown_path(folder), os.path.relpath(page, run.folder)) if page.is_file() else shown_path(folder)
    )
    rows: list[list[Cell]] = [
        ["checkpoint", str(ckpt)],
        ["split", str(run.config.get("split", "test"))],
        ["training run", trained],
    ]
    return Table(["", ""], rows)


def headline_table(run: Run) -> Table | Text:
    keys = run.headline()
    if not keys:
        return Text("no test metrics were recorded (run_test=false or the run stopped early)")
    return Table(["metric", "value"], [[k, run.metrics[k]] for k in keys])


def split_note(run: Run) -> Text | None:
    """Say so when the task's tables are of validation (run_test=false, or evaluate.py split=val)."""
    if split_prefix(run) == "test" or not run.metrics:
        return None
    return Text("no test split was evaluated: the task's tables below are of the last validation epoch")


def settings_blocks(run: Run) -> list[Table | Text]:
    rows = run.info.get("settings_changed")
    if rows is None:
        try:
            conf = _conf_dir(run)
            searchpath = [str(p) for p in run.hydra.get("searchpath") or []]
            rows = changed_settings(run.config, task_defaults(run.task, run.kind, conf, searchpath))
        except Exception as err:  # e.g. the project's conf/ is not beside the package
            return [Text(f"the task's defaults could not be composed here ({type(err).__name__}: {err})")]
    if not rows:
        return [Text(f"none: the defaults of task={run.task}")]
    note = Text("overrides on the command line: " + (" ".join(run.overrides) or "none"))
    return [note, Table(["setting", "task default", "this run"], [list(r) for r in rows])]


def _conf_dir(run: Run) -> Path | None:
    """The config folder the run was composed from (Hydra records it), when it still exists."""
    for source in (run.hydra.get("runtime") or {}).get("config_sources") or []:
        if (
            source.get("provider") == "main"
            and source.get("schema") == "file"
            and Path(source["path"]).is_dir()
        ):
            return Path(source["path"])
    return None


def curve_panels(run: Run) -> list[tuple[str, Lines]]:
    """Loss (train and validation) and the monitored metric with its training counterpart."""
    tags = run.events.tags()
    losses = [(t, run.curve(t)) for t in ("train/loss", "val/loss") if t in tags]
    monitor = run.monitor
    if monitor.endswith("loss"):  # already in the loss panel: show the first headline metric's val curve
        candidates = [k.replace("test/", "val/", 1) for k in run.info.get("headline", [])]
        monitor = next((t for t in candidates if t in tags), "")
    panels: list[tuple[str, Lines]] = [("loss", losses)]
    if monitor:
        counterpart = monitor.replace("val/", "train/", 1)
        lines = [(t, run.curve(t)) for t in (monitor, counterpart) if t in tags]
        panels.append((monitor + (" (monitored)" if monitor == run.monitor else ""), lines))
    return panels


def curves_section(run: Run) -> Section:
    section = Section("Training curves")
    panels = curve_panels(run)
    data = curves_png(panels)
    if data is None:
        return section.add(Text("no per-epoch curves recorded (logger=null, or no epoch finished)"))
    section.add(Figure("per epoch", data))
    epochs = sorted({e for _, lines in panels for _, pts in lines for e, _ in pts})
    columns = [t for _, lines in panels for t, _ in lines]
    values = {t: dict(pts) for _, lines in panels for t, pts in lines}
    rows: list[list[Cell]] = [[e, *(values[t].get(e) for t in columns)] for e in epochs]
    return section.add(
        Details(f"the curves as numbers ({len(epochs)} epochs)", [Table(["epoch", *columns], rows)])
    )


def metrics_table(run: Run) -> Table:
    return Table(["metric", "value"], [[k, v] for k, v in sorted(run.metrics.items())], sortable=True)


def machine_table(run: Run) -> Table:
    machine = dict(run.info.get("machine") or {})
    rows: list[list[Cell]] = []
    if run.train_seconds is not None:
        rows.append(["training (fit)", duration(run.train_seconds)])
    epoch = run.metrics.get("time/epoch_s")
    if epoch is not None:
        rows.append(["last epoch", duration(epoch)])
    if run.info.get("elapsed_s") is not None:
        rows.append(["whole run (start to report)", duration(float(run.info["elapsed_s"]))])
    if run.job.get("wall_s") is not None:
        rows.append(["job wall time", duration(float(run.job["wall_s"]))])
    if run.info.get("finished"):
        rows.append(["finished", run.info["finished"]])
    labels = {
        "host": "host", "os": "OS", "cpu": "CPU", "cpu_cores": "CPU cores", "cores_usable": "cores usable",
        "torch_threads": "torch threads", "device": "device", "gpu": "GPU", "devices": "devices",
        "precision": "precision", "python": "Python", "torch": "torch", "lightning": "Lightning",
    }  # fmt: skip
    rows += [[label, str(machine[key])] for key, label in labels.items() if key in machine]
    if not machine:
        rows.append(["machine", "not recorded (tables.json is missing)"])
    return Table(["", ""], rows)


def duration(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def report_link(run: Run, start: Path) -> Link:
    """A relative link from a page in `start` to the run's own report."""
    return Link(run.name, os.path.relpath(run.folder / HTML, start))
