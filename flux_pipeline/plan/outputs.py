"""Output paths that cannot all be written: one task's file is another task's directory.

A task with output ``a`` (format jpeg) writes ``a.jpg`` (or ``a-1.jpg``, ``a-2.jpg``... when
the API returns several images); a task with output ``a.jpg/b`` needs ``a.jpg`` to be a
directory. Both validate one by one, and the second one to finish would fail after both were
paid for. ``OutputTree`` finds such pairs at plan time. Paths are compared case-folded, like
the uniqueness of outputs (case-insensitive file systems).

A streamed plan (plan/stream.py) keeps only some paths (``keep``, plan/unique.py): a path it
does not keep is known to clash with nothing by its digest.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NUMBERED = re.compile(r"^(?P<stem>.+)-\d+\.(?P<ext>[^./]+)$")

Keep = Callable[[str, str], bool]
"""``keep("file" or "dir", path)``: record this path (a file, or a directory or the file name a
numbered directory stands for)? The paths a tree does not record are looked up all the same."""


def _always(kind: str, path: str) -> bool:
    return True


class OutputTree:
    """The files and the directories the outputs planned so far need."""

    def __init__(self, keep: Keep | None = None) -> None:
        self._files: dict[str, str] = {}  # "dir/x.jpg" (case-folded) -> readable id
        self._dirs: dict[str, str] = {}  # "dir" (case-folded) -> readable id
        self._numbered_dirs: dict[str, str] = {}  # dir "x-3.jpg" recorded as "x.jpg"
        self._keep = keep or _always

    def add(self, output: str, extension: str, readable_id: str) -> str | None:
        """Record a task's output; the problem when it clashes with an earlier one, else None."""
        keep = self._keep
        folded = output.casefold()
        file = f"{folded}.{extension.casefold()}"
        keep_file = keep("file", file)
        other = self._dirs.get(file) or self._numbered_dirs.get(file)
        if other is not None:
            return self._clash(output, extension, readable_id, other)
        parts = folded.split("/")
        kept: list[tuple[str, bool, str | None, bool]] = []
        for end in range(1, len(parts)):
            directory = "/".join(parts[:end])
            other = self._files.get(directory)
            numbered = _NUMBERED.match(directory)
            stands_for = f"{numbered['stem']}.{numbered['ext']}" if numbered else None
            if other is None and stands_for is not None:
                other = self._files.get(stands_for)
            if other is not None:
                return (
                    f"output path {output!r} of task {readable_id!r} needs a directory "
                    f"{'/'.join(output.split('/')[:end])!r} where task {other!r} writes a file"
                )
            kept.append(
                (
                    directory,
                    keep("dir", directory),
                    stands_for,
                    stands_for is not None and keep("dir", stands_for),
                )
            )
        if keep_file:
            self._files.setdefault(file, readable_id)
        for directory, keep_dir, stands_for, keep_numbered in kept:
            if keep_dir:
                self._dirs.setdefault(directory, readable_id)
            if keep_numbered and stands_for is not None:
                self._numbered_dirs.setdefault(stands_for, readable_id)
        return None

    @staticmethod
    def _clash(output: str, extension: str, readable_id: str, other: str) -> str:
        return (
            f"output path {output!r} of task {readable_id!r} writes a file named like a "
            f"directory that task {other!r} writes into"
        )
