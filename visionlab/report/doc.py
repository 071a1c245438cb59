"""The pieces a report is made of (sections of tables, figures and text), independent of HTML or
Markdown, so one builder feeds both renderers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Link:
    """A cell or line pointing at a local file (relative path), never a web address."""

    text: str
    href: str


#: what a table cell holds: text, a number (formatted by the renderer), a link, or nothing
Cell = str | int | float | Link | None


@dataclass
class Table:
    """Rows of cells under named columns; `sortable` tables get click-to-sort headers in HTML."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    sortable: bool = False
    #: per row, a CSS class (e.g. "failed", "best") or ""
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Figure:
    """A PNG image, embedded in HTML as base64 (Markdown names it and points at the HTML report)."""

    title: str
    png: bytes

    @property
    def width(self) -> int:
        """The image's width in pixels, read from the PNG header (0 when it is no PNG)."""
        if self.png[:8] != b"\x89PNG\r\n\x1a\n":
            return 0
        return int.from_bytes(self.png[16:20], "big")


@dataclass
class Text:
    """A paragraph (`code`: shown as preformatted text)."""

    text: str
    code: bool = False


@dataclass
class Details:
    """Blocks folded away in HTML behind `summary` (long tables such as every metric)."""

    summary: str
    blocks: list[Block]


Block = Table | Figure | Text | Details


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block | None) -> Section:
        """Append the blocks that are not None; returns self for chaining."""
        self.blocks.extend(b for b in blocks if b is not None)
        return self


@dataclass
class Report:
    """A whole page: a title, a line under it, key facts (label, value) and the sections."""

    title: str
    subtitle: str = ""
    facts: list[tuple[str, Cell]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str, *blocks: Block | None) -> Section:
        """Add a section (kept even when empty, so callers can fill it later)."""
        section = Section(title).add(*blocks)
        self.sections.append(section)
        return section


def fmt(value: Any, digits: int = 4) -> str:
    """A cell as text: floats with `digits` decimals (large ones fewer), NaN as n/a, None as ''."""
    if value is None:
        return ""
    if isinstance(value, Link):
        return value.text
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if abs(value) >= 1000:
            return f"{value:.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def signed(value: float | None, digits: int = 4) -> str:
    """A difference with its sign (+0.0123), '' when unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:+.{digits}f}"
