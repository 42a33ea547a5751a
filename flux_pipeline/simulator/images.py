"""Result images: real, deterministic pictures at the requested aspect ratio and format.

A result is drawn from a seed made of the taskId, the prompt and the result index: a two-colour
gradient, a few shapes, the prompt text and the taskId. Encoded bytes are kept in a small LRU
(``ImageCache``) so repeated downloads are cheap without holding every task's image in memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from collections import OrderedDict
from dataclasses import dataclass

# Pillow loads its WebP plugin lazily, on the first WebP saved, and silently leaves WebP out
# when that import fails (seen under the tests' address-space limit, tests/manifest/helpers.py
# ``cli_limited``, when it came late in a worker thread): a 500 for every WebP result. Loaded
# here, at start, while memory is plentiful, and a failure is an error at start, not mid-run.
from PIL import (
    Image,
    ImageDraw,
    ImageFont,
    ImageOps,
    WebPImagePlugin,  # noqa: F401  (registers the WebP encoder)
)

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
FORMAT_OF_EXTENSION = {ext: fmt for fmt, ext in EXTENSIONS.items()}


@dataclass(frozen=True)
class ImageSpec:
    """What one result image depends on (the LRU key)."""

    task_id: str
    prompt: str
    index: int
    aspect_ratio: str
    output_format: str
    size: int


def dimensions(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """Width and height for ``"W:H"`` with the longer side ``long_side`` pixels."""
    w_ratio, h_ratio = (int(part) for part in aspect_ratio.split(":"))
    if w_ratio >= h_ratio:
        return long_side, max(1, round(long_side * h_ratio / w_ratio))
    return max(1, round(long_side * w_ratio / h_ratio)), long_side


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def render(spec: ImageSpec) -> bytes:
    """Draw and encode one result image; the same spec always gives the same bytes."""
    digest = hashlib.sha256(f"{spec.task_id}\0{spec.prompt}\0{spec.index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    width, height = dimensions(spec.aspect_ratio, spec.size)
    gradient = (
        Image.linear_gradient("L").rotate(rng.choice((0, 45, 90, 135))).resize((width, height))
    )
    image = ImageOps.colorize(gradient, _colour(rng), _colour(rng)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 6)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = min(width, x0 + rng.randint(width // 8, width // 2 + 1))
        y1 = min(height, y0 + rng.randint(height // 8, height // 2 + 1))
        box = (x0, y0, max(x0 + 1, x1), max(y0 + 1, y1))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=_colour(rng), outline=(0, 0, 0))
        else:
            draw.rectangle(box, fill=_colour(rng), outline=(255, 255, 255))
    font_size = max(8, min(width, height) // 12)
    font = ImageFont.load_default(size=font_size)
    chars_per_line = max(8, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(spec.prompt, chars_per_line)[: max(1, height // (font_size * 2))]
    y = font_size // 2
    for line in lines:
        draw.text((font_size // 2 + 1, y + 1), line, fill=(0, 0, 0), font=font)
        draw.text((font_size // 2, y), line, fill=(255, 255, 255), font=font)
        y += int(font_size * 1.25)
    draw.text(
        (font_size // 2, height - font_size - 2),
        f"{spec.task_id} #{spec.index}",
        fill=(255, 255, 0),
        font=font,
    )
    out = io.BytesIO()
    if spec.output_format == "jpeg":
        image.save(out, "JPEG", quality=85)
    elif spec.output_format == "png":
        image.save(out, "PNG")
    else:
        image.save(out, "WEBP", quality=80)
    return out.getvalue()


class ImageCache:
    """A bounded LRU of encoded result images."""

    def __init__(self, max_entries: int) -> None:
        self._max = max(1, max_entries)
        self._items: OrderedDict[ImageSpec, bytes] = OrderedDict()

    def get(self, spec: ImageSpec) -> bytes | None:
        data = self._items.get(spec)
        if data is not None:
            self._items.move_to_end(spec)
        return data

    def put(self, spec: ImageSpec, data: bytes) -> None:
        self._items[spec] = data
        self._items.move_to_end(spec)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
