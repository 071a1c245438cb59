"""Progress of an embedded set's generation, so a first run is not silent while it draws its data.

In a terminal: a bar in the style of Lightning's RichProgressBar (when rich is installed; otherwise a
log line every 10 s). Elsewhere (log files, pipes, CI): one log line when it starts, one when it ends.
Generators report with `announce(total)` and `advance(n)`, or wrap their loop in `tracked(...)`; outside
`generating(...)` (a generator called directly) both do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("datamodules.synthetic")
T = TypeVar("T")

#: seconds between redraws of the bar, and between log lines without rich
_REDRAW_S, _LOG_EVERY_S = 0.1, 10.0


class _Generation:
    """One set being generated: its name, destination, size once announced, and how far it got."""

    def __init__(self, name: str, destination: Path) -> None:
        self.name, self.destination = name, destination
        self.started = time.perf_counter()
        self.total: int | None = None
        self.done = 0
        self._bar: Any = None
        self._task: Any = None
        self._shown = self.started

    def announce(self, total: int) -> None:
        """Log the start line with the set's size; in a terminal, show the bar."""
        self.total = int(total)
        log.info("generating the embedded set %s: %d images into %s", self.name, self.total, self.destination)
        if _terminal():
            self._bar = _rich_bar()
            if self._bar is not None:
                self._bar.start()
                self._task = self._bar.add_task(self.name, total=self.total)

    def advance(self, count: int) -> None:
        """Count `count` more images; redraw the bar (or, without rich in a terminal, log) now and then."""
        self.done += count
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            if now - self._shown >= _REDRAW_S:
                self._bar.refresh()
                self._shown = now
        elif self.total and _terminal() and now - self._shown >= _LOG_EVERY_S:
            log.info("%s: %d/%d images", self.name, self.done, self.total)
            self._shown = now

    def close(self, finished: bool) -> None:
        """Remove the bar and log how the generation ended."""
        if self._bar is not None:
            self._bar.stop()
        elapsed = time.perf_counter() - self.started
        if finished:
            size = f"{self.done} images " if self.total else ""
            log.info("generated %s: %sin %.1f s", self.name, size, elapsed)
        else:
            log.info("generation of %s stopped after %.1f s; it restarts on the next run", self.name, elapsed)


_current: _Generation | None = None


@contextlib.contextmanager
def generating(name: str, destination: Path) -> Iterator[None]:
    """Report the generation of the set `name` into `destination` while the block runs."""
    global _current
    _current = _Generation(name, destination)
    finished = False
    try:
        yield
        finished = True
    finally:
        _current.close(finished)
        _current = None


def announce(total: int) -> None:
    """The set being generated has `total` images."""
    if _current is not None:
        _current.announce(total)


def advance(count: int = 1) -> None:
    """`count` more images of the set being generated are written."""
    if _current is not None:
        _current.advance(count)


def tracked(items: Iterable[T], total: int, size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield `items` (a set of `total` images), advancing by `size(item)` images each (default 1)."""
    announce(total)
    for item in items:
        yield item
        advance(size(item) if size is not None else 1)


def _terminal() -> bool:
    """Whether the console is a terminal (where a bar can redraw itself)."""
    return sys.stdout.isatty()


def _rich_bar() -> Any:
    """A rich Progress with the columns and theme of Lightning's RichProgressBar, or None without rich.
    It redraws only when told (no refresh thread, so generators may fork worker processes)."""
    try:  # lazy: rich is optional
        from lightning.pytorch.callbacks.progress.rich_progress import (
            BatchesProcessedColumn,
            CustomBarColumn,
            CustomTimeColumn,
            ProcessingSpeedColumn,
            RichProgressBarTheme,
        )
        from rich.progress import Progress, TextColumn
    except ImportError:
        return None
    theme = RichProgressBarTheme()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        CustomBarColumn(
            complete_style=theme.progress_bar,
            finished_style=theme.progress_bar_finished,
            pulse_style=theme.progress_bar_pulse,
        ),
        BatchesProcessedColumn(style=theme.batch_progress),
        CustomTimeColumn(style=theme.time),
        ProcessingSpeedColumn(style=theme.processing_speed),
        auto_refresh=False,
        transient=True,
    )
