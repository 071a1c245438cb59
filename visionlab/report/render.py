"""A `Report` as one self-contained HTML page (Jinja2; figures as base64 PNG, no network) and as
Markdown (tables and text; figures are named and live in the HTML)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from visionlab.report.doc import Block, Cell, Details, Figure, Link, Report, Table, Text, fmt

TEMPLATES = Path(__file__).resolve().parent / "templates"


def grouped(blocks: list[Block]) -> list[tuple[str, Any]]:
    """Blocks as (kind, item) with consecutive figures gathered into one ("figures", [...]) row."""
    out: list[tuple[str, Any]] = []
    for block in blocks:
        if isinstance(block, Figure):
            if out and out[-1][0] == "figures":
                out[-1][1].append(block)
            else:
                out.append(("figures", [block]))
        else:
            out.append((type(block).__name__, block))
    return out


def _cell_html(value: Cell) -> Markup:
    if isinstance(value, Link):
        return Markup('<a href="{}">{}</a>').format(value.href, value.text)
    return escape(fmt(value))


def _td(value: Cell) -> Markup:
    """A table cell; numbers are right-aligned and carry their value for sorting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Markup('<td class="num" data-v="{}">{}</td>').format(repr(float(value)), fmt(value))
    if isinstance(value, str) and _is_number(value):  # numbers kept as written, e.g. swept values
        return Markup('<td data-v="{}">{}</td>').format(value, value)
    return Markup("<td>{}</td>").format(_cell_html(value))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        b64=lambda data: base64.b64encode(data).decode("ascii"), grouped=grouped, td=_td, cell=_cell_html
    )
    return env


def render_html(report: Report) -> str:
    """The page as HTML text."""
    template = _environment().get_template("report.html.j2")
    return template.render(report=report, generated=time.strftime("%Y-%m-%d %H:%M"))


def render_markdown(report: Report) -> str:
    """The page as Markdown: the facts, then each section's text and tables."""
    lines = [f"# {report.title}", ""]
    if report.subtitle:
        lines += [report.subtitle, ""]
    if report.facts:
        lines += [_md_table(["", ""], [[label, value] for label, value in report.facts]), ""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        lines += _md_blocks(section.blocks)
    lines.append("Figures are embedded in the HTML report beside this file.")
    return "\n".join(lines).rstrip() + "\n"


def _md_blocks(blocks: list[Block]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines += [_md_table(block.columns, block.rows), ""]
        elif isinstance(block, Text):
            lines += ([f"```\n{block.text}\n```"] if block.code else [block.text]) + [""]
        elif isinstance(block, Figure):
            lines += [f"*Figure: {block.title}*", ""]
        elif isinstance(block, Details):
            lines += [f"**{block.summary}**", "", *_md_blocks(block.blocks)]
    return lines


def _md_table(columns: list[str], rows: list[list[Cell]]) -> str:
    def text(value: Cell) -> str:
        if isinstance(value, Link):
            return f"[{value.text}]({value.href})"
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(columns) + " |"
    rule = "| " + " | ".join("---:" if _numeric(rows, i) else "---" for i in range(len(columns))) + " |"
    body = ["| " + " | ".join(text(v) for v in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _numeric(rows: list[list[Cell]], column: int) -> bool:
    values = [row[column] for row in rows if column < len(row) and row[column] not in (None, "")]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def write_files(report: Report, html_path: Path, markdown: bool = True) -> list[Path]:
    """Write the HTML (and the .md beside it) atomically; returns the paths written."""
    written = [_write(html_path, render_html(report))]
    if markdown:
        written.append(_write(html_path.with_suffix(".md"), render_markdown(report)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
