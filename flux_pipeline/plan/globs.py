"""Image-set globs, bounded and confined: ``files: 'refs/**/*.png'`` (docs/manifest.md).

Glob syntax as ``glob.glob(recursive=True)``: ``*``, ``?`` and ``[...]`` match within one path
segment, ``**`` matches any number of directories, names starting with ``.`` match only a
pattern segment starting with ``.``. Unlike ``glob.glob``, which walks whatever a pattern names
(``/usr/**/*.x`` runs for minutes, and its matches would name files outside the project):

- a pattern is relative to the manifest's directory; an absolute one is refused without
  looking at the file system;
- every directory is checked to be inside the project (symlinks resolved) *before* it is
  listed, and every match before it is returned; a problem names the pattern, never a file
  outside the project;
- at most ``MAX_GLOB_DIRS`` directories are listed and ``MAX_GLOB_FILES`` files matched;
- ``**`` does not follow links to directories (no loops); matches are regular files only.
"""

from __future__ import annotations

import os
import posixpath
import re
from fnmatch import fnmatchcase
from pathlib import Path

from flux_pipeline.layout import outside

MAX_GLOB_DIRS = 10_000  # directories one pattern may list
MAX_GLOB_FILES = 10_000  # files one pattern may match
_MAGIC = re.compile(r"[*?[]")


class GlobProblem(Exception):
    """Why a pattern cannot be expanded; ``str()`` is the one-line message."""


class _Walk:
    def __init__(self, base: Path, root: Path, pattern: str) -> None:
        self.base = base
        self.root = root
        self.pattern = pattern
        self.listed = 0

    def _entries(self, directory: str) -> list[os.DirEntry[str]]:
        where = self.base / directory if directory else self.base
        if outside(self.root, where) is not None:
            raise GlobProblem(
                f"{self.pattern!r} leads outside the project directory {self.root}: a manifest "
                "may only read files inside its repository (or its own directory when not in one)"
            )
        self.listed += 1
        if self.listed > MAX_GLOB_DIRS:
            raise GlobProblem(
                f"{self.pattern!r} lists more than {MAX_GLOB_DIRS} directories: narrow it"
            )
        try:
            with os.scandir(where) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError:  # unreadable or vanished: nothing matches there (as glob.glob)
            return []

    def below(self, directory: str) -> list[str]:
        """``directory`` and every directory under it (not through links), hidden ones left out."""
        result = [directory]
        stack = [directory]
        while stack:
            current = stack.pop()
            for entry in self._entries(current):
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    child = posixpath.join(current, entry.name) if current else entry.name
                    result.append(child)
                    stack.append(child)
        return result

    def matching(self, directory: str, segment: str, *, files: bool) -> list[str]:
        """Entries of ``directory`` matching ``segment``: files (last segment) or directories."""
        hidden = segment.startswith(".")
        found: list[str] = []
        for entry in self._entries(directory):
            if entry.name.startswith(".") and not hidden:
                continue
            if not fnmatchcase(entry.name, segment):
                continue
            try:
                kind = entry.is_file() if files else entry.is_dir()
            except OSError:
                continue
            if kind:
                found.append(posixpath.join(directory, entry.name) if directory else entry.name)
        return found


def confined_glob(base: Path, root: Path, pattern: str) -> list[str]:
    """The regular files under ``base`` matching ``pattern``, as sorted relative POSIX paths.

    Raises ``GlobProblem`` for an absolute pattern, one leading outside ``root``, a match that
    is a link leading outside it, or a pattern that lists or matches too much.
    """
    if pattern.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", pattern):
        raise GlobProblem(
            f"{pattern!r} is absolute: a pattern is relative to the manifest's directory"
        )
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    if not segments:
        raise GlobProblem(f"{pattern!r} names no files")
    walk = _Walk(base, root, pattern)
    directories = [""]
    matches: set[str] = set()
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        following: list[str] = []
        for directory in directories:
            if segment == "**":
                below = walk.below(directory)
                if last:
                    for each in below:
                        matches.update(walk.matching(each, "*", files=True))
                else:
                    following.extend(below)
            elif _MAGIC.search(segment):
                if last:
                    matches.update(walk.matching(directory, segment, files=True))
                else:
                    following.extend(walk.matching(directory, segment, files=False))
            else:
                joined = posixpath.join(directory, segment) if directory else segment
                target = base / joined
                if last and target.is_file():
                    matches.add(joined)
                elif not last and target.is_dir():
                    following.append(joined)
            if len(matches) > MAX_GLOB_FILES:
                raise GlobProblem(f"{pattern!r} matches more than {MAX_GLOB_FILES} files")
        directories = list(dict.fromkeys(following))
    for match in sorted(matches):
        if outside(root, base / match) is not None:
            raise GlobProblem(
                f"{pattern!r} matches {match}, a link leading outside the project directory "
                f"{root}: a manifest may only read files inside its repository"
            )
    return sorted(matches)
