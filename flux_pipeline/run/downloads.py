"""Result downloads and output files.

A result is streamed to a hidden temporary file beside its destination, its type checked by
magic bytes (JPEG, PNG, WebP), its SHA-256 computed on the way, and only then renamed into
place: an output path holds a whole image or nothing. Result URLs are fetched with a client
that never carries the API key (they live on another host).

A body is whole only when it is as long as its ``Content-Length`` (when the server sent one)
and it ends the way an image of its type ends (``media.image_ends_whole``: PNG's IEND chunk,
JPEG's EOI marker, WebP's RIFF size). Anything else is a retryable ``DownloadError`` and
nothing is renamed into place: a connection closed early (with a ``Content-Length`` httpx
itself raises ``RemoteProtocolError``; without one, a close looks like a normal end of body
and only the image check tells), or a server that stops short of what it declared.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from flux_pipeline.errors import DownloadError, InvalidResultError, ResultExpiredError
from flux_pipeline.media import TAIL_BYTES, image_ends_whole, replace_into, sniff_image

MAX_RESULT_BYTES = 200 * 1024 * 1024
# A download's whole exchange ends within this (a retryable ``DownloadError`` past it): the
# client's read timeout is per read, so a server trickling a byte every few seconds would
# hold a download open for ever. 200 MB (``MAX_RESULT_BYTES``) in 300 s is ~0.7 MB/s.
DOWNLOAD_DEADLINE = 300.0
INVALID_RESULT_URL = "INVALID_RESULT_URL"  # the fail code of a task whose result URL is unusable
OUTPUT_OUTSIDE = "OUTPUT_OUTSIDE"  # the fail code of a task whose output path leads outside
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Downloaded:
    bytes: int
    sha256: str
    image_type: str


class InvalidResultUrlError(InvalidResultError):
    """A result URL that cannot be fetched at all (not an absolute http(s) URL, or one httpx
    refuses): terminal for its task, whatever the API said."""


class OutputOutsideError(InvalidResultError):
    """An output path that leads outside the output directory (a link in it points elsewhere):
    terminal for its task, and nothing is written."""


def check_result_url(url: object) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else ``InvalidResultUrlError``."""
    shown = repr(url)[:120]
    if not isinstance(url, str):
        raise InvalidResultUrlError(f"result URL is not text: {shown}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InvalidResultUrlError(f"result URL {shown} is invalid: {exc}", url=url) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidResultUrlError(f"result URL {shown} is not an http(s) URL", url=url)
    return url


def new_download_client(*, max_connections: int = 32, timeout: float = 60.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=15.0),
        limits=httpx.Limits(max_connections=max_connections),
        follow_redirects=True,
        headers={"User-Agent": "flux-pipeline"},
    )


async def download(
    http: httpx.AsyncClient, url: str, dest: Path, *, deadline: float = DOWNLOAD_DEADLINE
) -> Downloaded:
    """``_download`` within ``deadline`` seconds, however the server paces its bytes; past
    it a retryable ``DownloadError`` (the temporary file is removed)."""
    try:
        with anyio.fail_after(deadline):
            return await _download(http, url, dest)
    except TimeoutError as exc:
        raise DownloadError(f"download took longer than {deadline:g}s", url=url) from exc


async def _download(http: httpx.AsyncClient, url: str, dest: Path) -> Downloaded:
    """Fetch ``url`` into ``dest`` atomically. Raises ``ResultExpiredError`` (403/404/410),
    ``InvalidResultError`` (not an image; ``InvalidResultUrlError``: not a URL we can fetch)
    or ``DownloadError`` (transient: retry)."""
    check_result_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    size = 0
    kind: str | None = None
    head = b""
    tail = b""
    try:
        request = http.build_request("GET", url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise InvalidResultUrlError(f"result URL is invalid ({detail})", url=url) from exc
    try:
        async with contextlib.aclosing(await http.send(request, stream=True)) as response:
            if response.status_code in (403, 404, 410):
                raise ResultExpiredError(
                    f"result URL answered {response.status_code}: expired or gone", url=url
                )
            if response.status_code != 200:
                raise DownloadError(f"result URL answered {response.status_code}", url=url)
            expected = response.headers.get("content-length")
            with temp.open("wb") as fh:
                async for chunk in response.aiter_bytes(_CHUNK):
                    if size == 0 and chunk:
                        head = chunk[:16]
                        kind = sniff_image(head)
                        if kind is None:
                            raise InvalidResultError(
                                "result is not a JPEG, PNG or WebP image", url=url
                            )
                    size += len(chunk)
                    if size > MAX_RESULT_BYTES:
                        raise InvalidResultError("result is larger than 200 MB", url=url)
                    digest.update(chunk)
                    fh.write(chunk)
                    tail = (tail + chunk)[-TAIL_BYTES:]
            received = response.num_bytes_downloaded
            if expected is not None and expected.isdigit() and int(expected) != received:
                raise DownloadError(f"truncated: got {received} of {expected} bytes", url=url)
            if kind is None:
                raise InvalidResultError("result is empty", url=url)
            if not image_ends_whole(head, tail, size, kind):
                raise DownloadError(
                    f"truncated: the body ended after {size} bytes, before the end of "
                    f"the {kind.upper()} image",
                    url=url,
                )
        replace_into(temp, dest)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise InvalidResultUrlError(f"result URL cannot be fetched ({detail})", url=url) from exc
    except httpx.HTTPError as exc:
        detail = str(exc)[:200]
        raise DownloadError(
            f"download failed: {type(exc).__name__}{f': {detail}' if detail else ''}", url=url
        ) from exc
    except OSError as exc:
        raise DownloadError(f"cannot write {dest}: {exc.strerror or exc}", url=url) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return Downloaded(bytes=size, sha256=digest.hexdigest(), image_type=kind)
