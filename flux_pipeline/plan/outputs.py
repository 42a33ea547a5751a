"""Output paths that cannot all be written: one task's file is another task's directory.

A task with output ``a`` (format jpeg) writes ``a.jpg`` (or ``a-1.jpg``, ``a-2.jpg``... when
the API returns several images); a task with output ``a.jpg/b`` needs ``a.jpg`` to be a
directory. Both validate one by one, and the second one to finish would fail after both were
paid for. ``OutputTree`` finds such pairs at plan time. Paths are compared case-folded, like
the uniqueness of outputs (case-insensitive file systems).
"""

from __future__ import annotations

import re

_NUMBERED = re.compile(r"^(?P<stem>.+)-\d+\.(?P<ext>[^./]+)$")


class OutputTree:
    """The files and the directories the outputs planned so far need."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # "dir/x.jpg" (case-folded) -> readable id
        self._dirs: dict[str, str] = {}  # "dir" (case-folded) -> readable id
        self._numbered_dirs: dict[str, str] = {}  # dir "x-3.jpg" recorded as "x.jpg"

    def add(self, output: str, extension: str, readable_id: str) -> str | None:
        """Record a task's output; the problem when it clashes with an earlier one, else None."""
        folded = output.casefold()
        file = f"{folded}.{extension.casefold()}"
        other = self._dirs.get(file) or self._numbered_dirs.get(file)
        if other is not None:
            return self._clash(output, extension, readable_id, other)
        parts = folded.split("/")
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            other = self._files.get(directory)
            numbered = _NUMBERED.match(directory)
            if other is None and numbered is not None:
                other = self._files.get(f"{numbered['stem']}.{numbered['ext']}")
            if other is not None:
                return (
                    f"output path {output!r} of task {readable_id!r} needs a directory "
                    f"{'/'.join(output.split('/')[:end])!r} where task {other!r} writes a file"
                )
        self._files.setdefault(file, readable_id)
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            self._dirs.setdefault(directory, readable_id)
            numbered = _NUMBERED.match(directory)
            if numbered is not None:
                self._numbered_dirs.setdefault(f"{numbered['stem']}.{numbered['ext']}", readable_id)
        return None

    @staticmethod
    def _clash(output: str, extension: str, readable_id: str, other: str) -> str:
        return (
            f"output path {output!r} of task {readable_id!r} writes a file named like a "
            f"directory that task {other!r} writes into"
        )
