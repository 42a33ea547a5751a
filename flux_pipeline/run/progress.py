"""Showing a run's progress: a live rich display on a terminal, one-line summaries otherwise.

The engine reports ``Progress`` snapshots through a callback and never prints; this module
is the only place that turns them into text. Every line the run prints while a display may be
live goes through its ``echo``: on a terminal rich prints it above the bar (a line written
around rich would be glued to the bar's line). The bar starts at the first snapshot, so a
run refused before its engine starts (a mistyped manifest, a bad setting) never shows one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from flux_pipeline.run.engine import Progress


def describe(p: Progress) -> str:
    return (
        f"{p.done}/{p.total} done, {p.failed} failed, {p.in_flight} in flight, "
        f"{p.downloading} downloading, {p.queued} queued | created {p.created}, "
        f"{p.requests} requests, {p.rate_limits} rate-limited | {p.elapsed:.0f}s"
    )


class LineProgress:
    """Plain lines every ``interval`` seconds (CI logs, pipes)."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self._stream = stream or sys.stderr
        self._interval = interval
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            print(f"flux-pipeline: {describe(p)}", file=self._stream, flush=True)

    def echo(self, line: str) -> None:
        print(line, file=self._stream, flush=True)

    def close(self) -> None:
        return None


class LiveProgress:
    """A rich progress bar on a terminal."""

    def __init__(self, console: Console) -> None:
        self._bar = RichProgress(
            TextColumn("[bold]flux-pipeline"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("run", total=None, detail="")
        self._console = console
        self._started = False
        self._closed = False

    def __call__(self, p: Progress) -> None:
        detail = (
            f"failed {p.failed} · in flight {p.in_flight} · downloading {p.downloading}"
            f" · created {p.created} · 429s {p.rate_limits}"
        )
        self._bar.update(self._task, total=p.total, completed=p.done + p.failed, detail=detail)
        if not self._started and not self._closed:
            self._started = True
            self._bar.start()

    def echo(self, line: str) -> None:
        """``line`` above the bar (or plainly, before it starts), never glued to it."""
        if self._started and not self._closed:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self._console.file.write(line + "\n")
            self._console.file.flush()

    def close(self) -> None:
        self._closed = True
        if self._started:
            self._bar.stop()


def progress_for(stream: TextIO | None = None) -> LineProgress | LiveProgress:
    stream = stream or sys.stderr
    if stream.isatty():
        return LiveProgress(Console(file=stream))
    return LineProgress(stream)
