"""Progress on stderr: a live bar with ETA on a terminal, one line per finished unit of work anywhere.

Logs and results never go to stdout, which ``--json`` reserves for the result object.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

T = TypeVar("T")
console = Console(stderr=True, highlight=False)


def log(message: str, *, verbose: bool = True) -> None:
    """One line to stderr."""
    if verbose:
        print(message, file=sys.stderr, flush=True)


class Bar:
    """Wrap an iterable in a transient progress bar; ``status`` sets the live text (loss, accuracy)."""

    def __init__(self, items: Iterable[T], total: int, description: str, enabled: bool = True):
        self.items, self.total, self.description = items, total, description
        self.enabled = enabled and console.is_terminal
        self._progress: Progress | None = None
        self._task = None

    def __iter__(self) -> Iterator[T]:
        if not self.enabled:
            yield from self.items
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=console, transient=True) as self._progress:
            self._task = self._progress.add_task(self.description, total=self.total, status="")
            for item in self.items:
                yield item
                self._progress.advance(self._task)

    def status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, status=text)


def pct(fraction: float | None) -> str:
    """An accuracy as every human-readable line shows it: percent (``--json`` and the APIs keep fractions)."""
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"
