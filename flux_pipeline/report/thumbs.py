"""Gallery thumbnails (docs/reports.md): one small WebP per downloaded image, and the image's
real size for the gallery's aspect-ratio boxes.

A thumbnail is content-addressed, ``OUT/.flux-pipeline/thumbs/<sha256 of the image>.webp``
(longest side ``LONG_SIDE`` pixels), inside the state directory where no output path of a
manifest is written. It is made when an image is downloaded (``run/downloader.py``, in a
worker thread) and, for images that lack one (an adopted or older run), by the report
builder. A broken or unreadable image never fails anything: it gets no thumbnail and the
gallery links the full image. Written atomically (``media.atomic_target``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from PIL import Image

from flux_pipeline.layout import STATE_DIR
from flux_pipeline.media import atomic_target

LONG_SIDE = 384
QUALITY = 80
THUMBS = f"{STATE_DIR}/thumbs"  # relative to the output directory, with '/' as in a URL
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FORMATS = ("PNG", "JPEG", "WEBP")  # what a result can be (media.sniff_image)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image's real size, and its thumbnail's path relative to OUT (None: none)."""

    width: int
    height: int
    thumb: str | None


def thumb_path(sha256: str) -> str:
    """The thumbnail of the image whose SHA-256 is ``sha256``, relative to OUT."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a SHA-256 digest: {sha256!r}")
    return f"{THUMBS}/{sha256}.webp"


def _size(image: Path) -> tuple[int, int]:
    with Image.open(image, formats=FORMATS) as im:  # the header only: no pixel is decoded
        width, height = im.size
    return int(width), int(height)


def _write_thumb(image: Path, dest: Path) -> None:
    with Image.open(image, formats=FORMATS) as im:
        im.draft("RGB", (LONG_SIDE, LONG_SIDE))  # JPEG: decode at a smaller scale
        small = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        small.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
        with atomic_target(dest) as temp:
            small.save(temp, format="WEBP", quality=QUALITY, method=4)


def ensure_thumb(out_dir: Path, image: Path, sha256: str) -> ImageInfo | None:
    """The size of ``image`` and its thumbnail, made now when it is missing. None when the
    image cannot be read at all; ``thumb`` None when no thumbnail could be written. Never
    raises for a bad image or a full disk: a thumbnail is a convenience."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a decompression-bomb warning
            width, height = _size(image)
    except Exception:  # not an image Pillow reads, gone, unreadable: no size, no thumbnail
        return None
    try:
        relative = thumb_path(sha256)
    except ValueError:
        return ImageInfo(width, height, None)
    dest = out_dir / relative
    if not dest.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _write_thumb(image, dest)
        except Exception:  # truncated pixel data, a bomb, no space left: the full image it is
            return ImageInfo(width, height, None)
    return ImageInfo(width, height, relative)


async def ensure_thumb_in_thread(out_dir: Path, image: Path, sha256: str) -> None:
    """``ensure_thumb`` in a worker thread, off the event loop. Raises nothing but a
    cancellation: where no thread can be started (a tight memory limit) the image simply has
    no thumbnail yet, and the report builder makes it later."""
    try:
        await anyio.to_thread.run_sync(ensure_thumb, out_dir, image, sha256)
    except Exception:
        return
