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


# How much of a file's end ``image_complete`` looks at: enough for PNG's 12-byte IEND chunk
# and for a JPEG's EOI marker followed by encoder padding (zero bytes; see image_ends_whole).
TAIL_BYTES = 4096
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # IEND: zero length, type, CRC
_JPEG_EOI = b"\xff\xd9"


def image_ends_whole(head: bytes, tail: bytes, size: int, kind: str) -> bool:
    """Is a file of ``size`` bytes, starting with ``head`` and ending with ``tail``, a whole
    image of type ``kind`` ('jpeg', 'png', 'webp'), not the first part of one?

    Only the container's ends are checked, not the pixels: that is what a download cut short
    gets wrong. ``head`` needs the first 12 bytes; ``tail`` the last bytes of the file (at
    most ``TAIL_BYTES`` are looked at).

    - PNG: the file ends with the IEND chunk (its fixed CRC ``AE 42 60 82``); nothing after.
    - JPEG: the last non-zero bytes are the EOI marker ``FF D9``. Zero bytes after it are
      allowed (some encoders and cameras pad to a block size, and decoders ignore them);
      scan data cannot end a cut-short file in ``FF D9`` because a data byte ``FF`` is always
      stuffed as ``FF 00``. (A file cut right after an embedded EXIF thumbnail's EOI would
      pass: the ends cannot tell it apart.)
    - WebP: the RIFF size field (bytes 4..8, little endian) plus 8 is the file size.
    """
    if sniff_image(head[:16]) != kind:
        return False
    if kind == "png":
        return tail.endswith(_PNG_END) and size >= len(_PNG_END) + 8
    if kind == "jpeg":
        window = tail[-TAIL_BYTES:].rstrip(b"\x00")
        return window.endswith(_JPEG_EOI) and size >= 4
    if kind == "webp":
        return int.from_bytes(head[4:8], "little") + 8 == size
    return False


def image_complete(path: Path, kind: str) -> bool:
    """``image_ends_whole`` for a file on disk, reading only its head and tail."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read(TAIL_BYTES)
    except OSError:
        return False
    return image_ends_whole(head, tail, size, kind)


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
