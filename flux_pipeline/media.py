"""Image files and atomic writes: the one home for sniffing, hashing and replacing files.

Every file flux-pipeline writes (images, reports, copies made by ``merge``) goes to a hidden
temporary name beside its destination and is renamed into place, so a path holds a whole file
or its previous version, never half of one. ``tempfile.mkstemp`` creates files 0600; the
finished file gets the permissions a normal ``open()`` would give (0644 under the usual umask).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()


def sniff_image(head: bytes) -> str | None:
    """'jpeg', 'png' or 'webp' from the first bytes of a file, else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_matches(path: Path, size: int, sha256: str | None = None) -> bool:
    """Does ``path`` hold ``size`` bytes (and, when given, content with that SHA-256)?"""
    try:
        if path.stat().st_size != size:
            return False
        return sha256 is None or sha256_file(path) == sha256
    except OSError:
        return False


def temp_path(dest: Path) -> Path:
    """A fresh hidden name beside ``dest`` (same directory, so the rename is atomic)."""
    fd, temp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    return Path(temp)


def replace_into(temp: Path, dest: Path) -> None:
    """Give ``temp`` normal permissions and rename it onto ``dest``."""
    os.chmod(temp, _FILE_MODE)
    os.replace(temp, dest)


@contextlib.contextmanager
def atomic_target(dest: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``dest``, on error it is gone."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(dest)
    try:
        yield temp
        replace_into(temp, dest)
    finally:
        temp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its pieces, streamed) as UTF-8, atomically."""
    with atomic_target(path) as temp, temp.open("w", encoding="utf-8") as fh:
        if isinstance(text, str):
            fh.write(text)
        else:
            fh.writelines(text)


def copy_atomic(source: Path, dest: Path) -> None:
    with atomic_target(dest) as temp:
        shutil.copyfile(source, temp)
