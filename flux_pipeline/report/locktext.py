"""The lock file's text (docs/lockfile.md): deterministic, one block per task, a field a
line, sorted; written atomically and only when it changed. The entries and their reading are
``report/lockfile.py``'s."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from json.encoder import encode_basestring
from pathlib import Path

from flux_pipeline.media import write_atomic
from flux_pipeline.report.lockfile import FORMAT, PLAIN_FORMAT, LockEntry

_ENCODE = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode


def _encode(value: object) -> str:  # scalars without the encoder's overhead
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _ENCODE(value)


def entry_block(entry: LockEntry) -> str:
    """One task's block of the lock's text: its key, then a field a line (compact JSON)."""
    body = entry.to_json()
    lines = ",\n".join(f'      "{name}": {_encode(body[name])}' for name in sorted(body))
    return f'    "{entry.key}": {{\n' + lines + "\n    }"


def lock_parts(manifest: str, blocks: Mapping[str, str], *, stored: bool = False) -> list[str]:
    """The lock's text in three parts (written as they are: the tasks are joined once, never
    copied again), from every task's ``entry_block`` by key: tasks sorted by key. ``stored``:
    an output names its object in the bucket (format 2; else format 1, as before)."""
    version = FORMAT if stored else PLAIN_FORMAT
    head = '{\n  "format": ' + str(version) + ',\n  "manifest": ' + _encode(manifest)
    if not blocks:
        return [head + ',\n  "tasks": {}\n}\n']
    tasks = ",\n".join(map(blocks.__getitem__, sorted(blocks)))  # one copy, made in C
    return [head + ',\n  "tasks": {\n', tasks, "\n  }\n}\n"]


PIECE_CHARS = 1 << 20  # the lock's text is streamed in pieces of about this many characters


def lock_stream(manifest: str, blocks: Mapping[str, str], *, stored: bool = False) -> Iterator[str]:
    """The text of ``lock_parts``, in pieces of about ``PIECE_CHARS``: the tasks are never
    joined into one string (at 100,000 tasks that string alone is some 70 MB)."""
    (first,) = lock_parts(manifest, {}, stored=stored)
    if not blocks:
        yield first
        return
    yield first.removesuffix("{}\n}\n") + "{\n"
    batch: list[str] = []
    size = 0
    for number, key in enumerate(sorted(blocks)):
        block = blocks[key]
        batch.append(",\n" + block if number else block)
        size += len(block)
        if size >= PIECE_CHARS:
            yield "".join(batch)
            batch, size = [], 0
    yield "".join(batch) + "\n  }\n}\n"


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at ``path``, read in chunks; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(PIECE_CHARS):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def text_sha256(pieces: Iterable[str]) -> str:
    """The SHA-256 of the UTF-8 text made of ``pieces``, one piece held at a time."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece.encode("utf-8"))
    return digest.hexdigest()


def write_lock_stream(
    path: Path,
    pieces: Callable[[], Iterable[str]],
    *,
    compare: bool = True,
    sha256: str | None = None,
) -> bool:
    """``write_lock_text`` for a text made in pieces by ``pieces()``, one piece held at a
    time: with ``compare``, the file's SHA-256 (read in chunks) against the pieces' (``sha256``
    when the caller has it); then the pieces made again and written atomically. True if
    written."""
    on_disk = file_sha256(path) if compare else None
    if on_disk is not None and on_disk == (sha256 or text_sha256(pieces())):
        return False
    write_atomic(path, pieces())
    return True


def lock_text(manifest: str, blocks: Mapping[str, str], *, stored: bool = False) -> str:
    """The lock's text (``lock_parts`` joined)."""
    return "".join(lock_parts(manifest, blocks, stored=stored))


def lock_pieces(manifest: str, entries: Mapping[str, LockEntry]) -> Iterator[str]:
    """The lock's text (in one piece; kept for callers that join pieces)."""
    stored = any(o.stored for entry in entries.values() for o in entry.outputs)
    blocks = {key: entry_block(entry) for key, entry in entries.items()}
    yield lock_text(manifest, blocks, stored=stored)


def write_lock(path: Path, manifest: str, entries: Mapping[str, LockEntry]) -> bool:
    """Write the lock atomically unless its text is already exactly this; True if written."""
    return write_lock_text(path, "".join(lock_pieces(manifest, entries)))


def write_lock_text(path: Path, text: str | list[str], *, compare: bool = True) -> bool:
    """Write ``text`` (or its parts) atomically at ``path`` unless the file holds exactly it
    (``compare`` False: the caller knows it does not); True if written."""
    try:
        joined = text if isinstance(text, str) else "".join(text) if compare else ""
        if compare and path.read_text(encoding="utf-8") == joined:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text)
    return True
