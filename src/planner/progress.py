"""Progress of long work on stderr: a rich display of the current phase and its count.

The command line turns it on (`display`) only when stderr is a terminal and the output is not JSON; it then
appears once the work has run for `DELAY_S` seconds, so a short search prints nothing, and it is erased when
the work ends (stdout keeps only the result). Code that does long work marks its phases with `track` (a loop
with a count) or `phase` (one step); without a display both cost nothing, so the API and the tests run them
silently.
"""

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar

DELAY_S = 1.0
"""Seconds of work before the display appears (`PLANNER_PROGRESS_DELAY_S` overrides it)."""

_ACTIVE: ContextVar = ContextVar("planner_progress", default=None)


def wanted(fmt: str = "table") -> bool:
    """A display only for people: stderr is a terminal and the output is not JSON."""
    return fmt != "json" and sys.stderr.isatty()


class _Delayed:
    """A rich Progress started by a timer, stopped at the end; a lock keeps a late timer from starting it after
    the work has ended."""

    def __init__(self, delay_s: float):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=True,
            redirect_stdout=False,  # the result goes to stdout after the work, never into the display
            redirect_stderr=False,
        )
        self._lock = threading.Lock()
        self._ended = False
        self._timer = threading.Timer(delay_s, self._start)
        self._timer.daemon = True
        self._timer.start()

    def _start(self) -> None:
        with self._lock:
            if not self._ended:
                self.bar.start()

    def end(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._ended = True
            self.bar.stop()


@contextmanager
def display(enabled: bool) -> Iterator[None]:
    """Show the phases marked inside this block on stderr (see the module docstring); nothing when disabled."""
    if not enabled:
        yield
        return
    delay_s = float(os.environ.get("PLANNER_PROGRESS_DELAY_S", DELAY_S))
    shown = _Delayed(delay_s)
    token = _ACTIVE.set(shown.bar)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        shown.end()


def track(items: Iterable, description: str, total: int | None = None) -> Iterator:
    """Iterate `items`, counting them on the display (if one is shown)."""
    bar = _ACTIVE.get()
    if bar is None:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    task = bar.add_task(description, total=total)
    for item in items:
        yield item
        bar.advance(task)
    bar.update(task, visible=False)


@contextmanager
def phase(description: str) -> Iterator[None]:
    """One step of long work without a count (e.g. the CP-SAT enumeration), shown with a spinner."""
    bar = _ACTIVE.get()
    if bar is None:
        yield
        return
    task = bar.add_task(description, total=None)
    try:
        yield
    finally:
        bar.update(task, visible=False)
