"""`python -m visionlab.report RUN [RUN ...] [--out FILE]`: the report of a run folder, a comparison of
runs of one task, or the report of a multirun (sweep) folder, as HTML with a Markdown twin."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visionlab.errors import ConfigError, VisionlabError
from visionlab.report.collect import is_sweep, load_run
from visionlab.report.doc import Report
from visionlab.report.render import write_files
from visionlab.report.run_report import HTML

#: where a comparison goes without --out (in the current folder)
COMPARISON = "comparison.html"


def build(paths: list[Path], out: Path | None) -> tuple[Report, Path]:
    """The report for the folders given and the file it is written to."""
    if len(paths) == 1 and is_sweep(paths[0]):
        from visionlab.report.sweep_report import build_sweep_report  # lazy for speed: one builder a call

        target = out or paths[0] / HTML
        return build_sweep_report(paths[0].resolve(), target.parent.resolve()), target
    sweeps = [p for p in paths if is_sweep(p)]
    if sweeps:
        raise ConfigError(
            f"{sweeps[0]} is a multirun folder; give it alone for its sweep report, or compare its job folders"
        )
    runs = [load_run(p) for p in paths]
    if len(runs) == 1:
        from visionlab.report.run_report import build_run_report

        return build_run_report(runs[0]), out or runs[0].folder / HTML
    from visionlab.report.compare import build_comparison

    target = out or Path(COMPARISON)
    return build_comparison(runs, target.parent.resolve()), target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionlab.report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, metavar="RUN", help="run folders, or one multirun folder"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the HTML file to write (a .md beside it); default: <folder>/{HTML}, for a comparison ./{COMPARISON}",
    )
    parser.add_argument("--no-md", action="store_true", help="write the HTML only")
    args = parser.parse_args(argv)
    try:
        if args.out is not None and args.out.suffix != ".html":
            raise ConfigError(
                f"--out {args.out}: give a file name ending in .html (the .md is written beside it)"
            )
        report, target = build(args.folders, args.out)
        written = write_files(report, target, markdown=not args.no_md)
    except VisionlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
