"""The problems found while planning, collected so that one pass reports all of them.

Each problem is located in the manifest by its YAML path (``Located.diag``); the same message
at the same place is reported once, and at most ``MAX_ERRORS`` are kept. A template that failed
once is remembered (``failed``): the other tasks using it are skipped quietly.

Warnings (``warn``: a value outside the API values table, ``manifest/apivalues.py``) are kept
apart: they do not stop the plan, and ``--strict`` turns them into errors (``expand.load_plan``).
"""

from __future__ import annotations

from flux_pipeline.errors import Diagnostic
from flux_pipeline.manifest.diagnostics import dotted
from flux_pipeline.manifest.yamlload import Located, Path_

MAX_ERRORS = 200


class Failed(Exception):
    """A task could not be built (already reported)."""


class Problems:
    """Diagnostics of one planning pass, in the order found."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.diagnostics: list[Diagnostic] = []
        self.failed: set[Path_] = set()  # templates that failed: their other tasks are skipped
        self._reported: set[tuple[Path_, str]] = set()
        self.warnings: list[Diagnostic] = []
        self._warned: set[tuple[Path_, str]] = set()

    def copy(self) -> Problems:
        """These problems so far, to go on from more than once (plan/stream.py's passes)."""
        other = Problems(self.located)
        other.diagnostics = list(self.diagnostics)
        other.failed = set(self.failed)
        other._reported = set(self._reported)
        other.warnings = list(self.warnings)
        other._warned = set(self._warned)
        return other

    @property
    def count(self) -> int:
        return len(self.diagnostics)

    def report(self, at: Path_, message: str, *, key: bool = False) -> None:
        if (at, message) in self._reported or len(self.diagnostics) >= MAX_ERRORS:
            return
        self._reported.add((at, message))
        self.diagnostics.append(self.located.diag(at, f"{dotted(at)}: {message}", key=key))

    def warn(self, at: Path_, message: str, *, once: str | None = None) -> None:
        """A located warning: ``file:line:col: warning: PATH: message``, once per place and
        ``once`` (default: the message; a template's warnings pass the value it rendered, so
        that a value many tasks render is reported for the first of them)."""
        seen = (at, message if once is None else once)
        if seen in self._warned or len(self.warnings) >= MAX_ERRORS:
            return
        self._warned.add(seen)
        self.warnings.append(self.located.diag(at, f"warning: {dotted(at)}: {message}"))

    def fail(self, at: Path_, message: str) -> Failed:
        """Report a failed template (once); the caller raises the returned ``Failed``."""
        self.failed.add(at)
        self.report(at, message)
        return Failed()

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.diagnostics, key=lambda d: (d.line, d.column))
