"""The images of the gallery's tasks (docs/reports.md): each output's path confined to the
output directory, its real size, and its thumbnail, made when it is missing.

The gallery of a 100,000-task run is made again at the end of every run that changed
something (an adoption, a run that added tasks), and most of that time went into resolving
every output's path and opening every image for its size. So:

- a path is confined as the lock file's are (``report/lockcheck.py`` ``Confinement``): each
  directory resolved once, a file only when it is a symlink;
- an image's size is the one the previous gallery showed for the same content (its SHA-256)
  while that image's thumbnail is there: an image's size is a function of its bytes. Any
  other image is opened (its header only, ``report/thumbs.py``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.lockcheck import Confinement
from flux_pipeline.report.thumbs import ensure_thumb, thumb_path
from flux_pipeline.states import TaskState

Size = tuple[int, int]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def pack_hash(text: str) -> str:
    """A key or SHA-256 as the gallery's data stores it: 43 characters of unpadded base64url
    (``~`` then the text, for one that is not 64 hex digits)."""
    if _HEX64.match(text):
        return base64.urlsafe_b64encode(bytes.fromhex(text)).decode().rstrip("=")
    return "~" + text


def unpack_hash(packed: str) -> str:
    if packed.startswith("~"):
        return packed[1:]
    return base64.urlsafe_b64decode(packed + "=").hex()


class GalleryImages:
    """The ``outputs`` field of gallery rows (``gallery_data.py``) for ``out_dir``.
    ``sizes``: packed SHA-256 -> (width, height) the previous gallery showed
    (``previous_sizes``)."""

    def __init__(self, out_dir: Path, sizes: Mapping[str, Size] | None = None) -> None:
        self.out_dir = out_dir
        self._paths = Confinement(out_dir)
        self._sizes = sizes or {}

    def shown(self, entry: TaskEntry) -> list[list[object]]:
        """``[path, thumbnail (the packed SHA-256) or None, width, height, on disk 1/0]``
        of each output of ``entry`` (none unless it finished)."""
        shown: list[list[object]] = []
        if entry.state not in (TaskState.DOWNLOADED, TaskState.SUCCEEDED):
            return shown
        for output in entry.outputs:
            image = self.out_dir / output.path
            # never read through a link leading out of the output directory
            if self._paths.problem(output.path) is not None or not image.is_file():
                shown.append([output.path, None, 0, 0, 0])
                continue
            packed = pack_hash(output.sha256)
            known = self._sizes.get(packed)
            if known is not None and self._has_thumb(output.sha256):
                shown.append([output.path, packed, known[0], known[1], 1])
                continue
            info = ensure_thumb(self.out_dir, image, output.sha256)
            if info is None:
                shown.append([output.path, None, 0, 0, 1])
            else:
                thumb = packed if info.thumb else None
                shown.append([output.path, thumb, info.width, info.height, 1])
        return shown

    def _has_thumb(self, sha256: str) -> bool:
        try:
            return (self.out_dir / thumb_path(sha256)).is_file()
        except ValueError:  # not a SHA-256: no thumbnail could be named for it
            return False


def previous_sizes(previous: Mapping[str, Any] | None) -> dict[str, Size]:
    """Packed SHA-256 (``pack_hash``) -> (width, height) of every image gallery data
    ``previous`` showed with a thumbnail. Anything malformed in it is skipped: such an image
    is simply opened again."""
    if previous is None:
        return {}
    sizes: dict[str, Size] = {}
    try:
        at = list(previous["fields"]).index("outputs")
        rows = list(previous["t"])
    except (KeyError, TypeError, ValueError):
        return sizes
    for row in rows:
        try:
            outputs = row[at]
        except (IndexError, KeyError, TypeError):
            continue
        for output in outputs if isinstance(outputs, list) else ():
            if not isinstance(output, list) or len(output) != 5:
                continue
            thumb, width, height = output[1], output[2], output[3]
            if not isinstance(thumb, str) or not _positive(width) or not _positive(height):
                continue
            sizes[thumb] = (width, height)
    return sizes


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
