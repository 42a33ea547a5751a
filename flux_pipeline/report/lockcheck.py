"""Checks of the values of a lock file, untrusted input (``report/lockfile.py`` reads the file
with them): each problem is one ``BadLock`` line, which ``lockfile.parse_lock`` turns into a
``UsageError`` naming the file."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NoReturn

from flux_pipeline.layout import inside

MAX_DEPTH = 64  # how deeply a request in a lock may nest


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
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        fail(f"'urls_expire' {shown(value)} is not a UTC time (YYYY-MM-DDTHH:MM:SSZ)")
    return int(moment.timestamp())


def confined(path: str, out_dir: Path | None) -> str | None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path or "\x00" in path:
        return f"output path {shown(path)} is not a relative path inside the output directory"
    if out_dir is not None:
        try:
            inside(out_dir, path)
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
