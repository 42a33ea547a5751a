"""Checks of the values of a lock file, untrusted input (``report/lockfile.py`` reads the file
with them): each problem is one ``BadLock`` line, which ``lockfile.parse_lock`` turns into a
``UsageError`` naming the file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from flux_pipeline.layout import inside

MAX_DEPTH = 64  # how deeply a request in a lock may nest
_UTC_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class BadLock(Exception):
    pass


def fail(why: str) -> NoReturn:
    raise BadLock(why)


def shown(text: str, limit: int = 50) -> str:
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 4] + "...'"


def text(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        fail(f"{name!r} must be a non-empty string")
    return value


def text_or_none(data: Mapping[str, object], name: str) -> str | None:
    if name in data and data[name] is None:
        return None
    value = data.get(name)
    if not isinstance(value, str) or not value:
        fail(f"{name!r} must be a non-empty string or null")
    return value


def count(data: Mapping[str, object], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        fail(f"{name!r} must be a whole number")
    return value


def count_or_none(data: Mapping[str, object], name: str) -> int | None:
    return None if name in data and data[name] is None else count(data, name)


def depth(value: object) -> None:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            fail(f"'request' is nested more than {MAX_DEPTH} deep")
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)


def expiry(data: Mapping[str, object]) -> int | None:
    value = data.get("urls_expire")
    if value is None:
        return None
    if not isinstance(value, str):
        fail("'urls_expire' must be a UTC time (YYYY-MM-DDTHH:MM:SSZ) or null")
    try:
        if not _UTC_TIME.match(value):
            raise ValueError(value)
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        fail(f"'urls_expire' {shown(value)} is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)")


class Confinement:
    """Output paths of a lock inside ``out_dir`` (``layout.inside``: lexically, and after
    resolving symlinks); each directory is resolved once, a file only when it is a symlink,
    so 100,000 outputs in a few directories cost 100,000 ``lstat`` calls."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._dirs: dict[str, str | None] = {}

    def problem(self, path: str) -> str | None:
        parts = path.split("/")
        if (
            path.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or ("\\" in path or "\x00" in path)
        ):
            return f"output path {shown(path)} is not a relative path inside the output directory"
        if self.out_dir is None:
            return None
        parent = path.rpartition("/")[0]
        if parent not in self._dirs:
            self._dirs[parent] = self._check(parent) if parent else None
        if self._dirs[parent] is not None:
            return f"output path {shown(path)}: {self._dirs[parent]}"
        if os.path.islink(os.path.join(self.out_dir, path)):
            return self._check(path)
        return None

    def _check(self, relative: str) -> str | None:
        assert self.out_dir is not None
        try:
            inside(self.out_dir, relative)
        except (ValueError, OSError) as exc:
            return str(exc)
        return None


def urls(data: Mapping[str, object]) -> tuple[str, ...]:
    items = data.get("result_urls")
    if not isinstance(items, list) or not all(
        isinstance(u, str) and u.startswith(("https://", "http://")) for u in items
    ):
        fail("'result_urls' must be a list of http(s) URLs")
    return tuple(str(u) for u in items)
