"""Downloads are whole or nothing: a body cut short is never renamed into place.

The end-to-end cases talk to a real HTTP server on 127.0.0.1 (an asyncio server that writes a
fixed response, then closes the connection), with and without ``Content-Length``. The unit
cases check ``media.image_complete``: how each image type ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from flux_pipeline.errors import DownloadError, InvalidResultError, is_retryable
from flux_pipeline.media import TAIL_BYTES, image_complete, image_ends_whole, sniff_image
from flux_pipeline.run.downloads import download, new_download_client
from flux_pipeline.simulator.images import MEDIA_TYPES, ImageSpec, render

FORMATS = ("png", "jpeg", "webp")


def image(kind: str, size: int = 48, prompt: str = "a lighthouse at dusk") -> bytes:
    return render(ImageSpec("task-1", prompt, 0, "4:3", kind, size))


def response(body: bytes, *, kind: str = "png", content_length: int | None = None) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        f"Content-Type: {MEDIA_TYPES[kind]}",
        "Connection: close",
    ]
    if content_length is not None:
        head.append(f"Content-Length: {content_length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def serving(raw: bytes) -> AsyncIterator[str]:
    """A server on 127.0.0.1 answering every request with ``raw`` and closing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/results/r-1"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def fetch(raw: bytes, dest: Path) -> None:
    async with serving(raw) as url, new_download_client(timeout=10.0) as http:
        await download(http, url, dest)


# --- over a real socket ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("with_length", [False, True], ids=["no-length", "length"])
async def test_a_whole_image_is_downloaded(tmp_path: Path, kind: str, with_length: bool) -> None:
    body = image(kind)
    dest = tmp_path / "out" / f"a.{kind}"
    length = len(body) if with_length else None
    async with (
        serving(response(body, kind=kind, content_length=length)) as url,
        new_download_client(timeout=10.0) as http,
    ):
        got = await download(http, url, dest)
    assert dest.read_bytes() == body
    assert (got.bytes, got.sha256, got.image_type) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
        kind,
    )
    assert leftovers(dest.parent) == [dest.name]
    assert dest.stat().st_mode & 0o777 == 0o644


@pytest.mark.anyio
@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("keep", ["30 bytes", "half", "all but one"])
async def test_a_body_closed_early_without_length_is_an_error(
    tmp_path: Path, kind: str, keep: str
) -> None:
    """No Content-Length: the close looks like the end of the body to HTTP; only the image's
    own end tells it was cut short (the 30-byte "PNG" recorded as done)."""
    body = image(kind)
    end = {"30 bytes": 30, "half": len(body) // 2, "all but one": len(body) - 1}[keep]
    cut = body[:end]
    assert 12 <= len(cut) < len(body)
    dest = tmp_path / f"a.{kind}"
    with pytest.raises(DownloadError, match="truncated") as caught:
        await fetch(response(cut, kind=kind), dest)
    assert type(caught.value) is DownloadError
    assert is_retryable(caught.value)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", FORMATS)
async def test_a_body_shorter_than_its_content_length_is_an_error(
    tmp_path: Path, kind: str
) -> None:
    """httpx itself refuses a body that ends before its Content-Length (RemoteProtocolError):
    that is a retryable DownloadError too."""
    body = image(kind)
    dest = tmp_path / f"a.{kind}"
    with pytest.raises(DownloadError, match="RemoteProtocolError") as caught:
        await fetch(response(body[: len(body) // 2], kind=kind, content_length=len(body)), dest)
    assert type(caught.value) is DownloadError
    assert is_retryable(caught.value)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_a_failed_download_leaves_an_earlier_file_alone(tmp_path: Path) -> None:
    dest = tmp_path / "a.png"
    dest.write_bytes(b"earlier")
    with pytest.raises(DownloadError):
        await fetch(response(image("png")[:100]), dest)
    assert dest.read_bytes() == b"earlier"
    assert leftovers(tmp_path) == ["a.png"]


@pytest.mark.anyio
async def test_a_body_that_is_no_image_stays_terminal(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError):
        await fetch(response(b"<html>not an image</html>"), tmp_path / "a.png")
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_a_length_mismatch_after_a_clean_end_is_an_error(tmp_path: Path) -> None:
    """A transport that ends the body cleanly but short of its Content-Length (HTTP/1.1 over
    h11 raises instead, above): the length check of ``download`` itself."""
    body = image("png")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-length": str(len(body) + 10)},
            stream=httpx.ByteStream(body),
        )

    dest = tmp_path / "a.png"
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(DownloadError, match=f"got {len(body)} of {len(body) + 10} bytes"):
            await download(http, "http://results.invalid/r-1", dest)
    assert leftovers(tmp_path) == []


# --- how an image ends ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("size", [1, 16, 300])
@pytest.mark.parametrize("ratio", ["1:1", "21:9", "9:16"])
def test_the_simulators_images_are_complete(kind: str, size: int, ratio: str) -> None:
    body = render(ImageSpec("t", "edit " * 40, 1, ratio, kind, size))
    assert image_ends_whole(body[:16], body[-TAIL_BYTES:], len(body), kind)


@pytest.mark.parametrize("kind", FORMATS)
def test_every_cut_of_an_image_is_incomplete(kind: str) -> None:
    body = image(kind, size=24)
    for end in range(12, len(body)):
        cut = body[:end]
        assert not image_ends_whole(cut[:16], cut[-TAIL_BYTES:], end, kind), end


@pytest.mark.parametrize("kind", FORMATS)
def test_image_complete_reads_a_file(tmp_path: Path, kind: str) -> None:
    body = image(kind, size=200)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.write_bytes(body)
    cut.write_bytes(body[: len(body) - 3])
    assert image_complete(whole, kind)
    assert not image_complete(cut, kind)
    assert not image_complete(tmp_path / "missing", kind)


def test_the_declared_type_must_match_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(image("png"))
    assert image_complete(path, "png")
    assert not image_complete(path, "jpeg")
    assert not image_complete(path, "webp")
    assert not image_complete(path, "gif")


def test_png_must_end_with_iend() -> None:
    body = image("png")
    assert body.endswith(b"IEND\xaeB`\x82")
    trailing = body + b"\x00"
    assert not image_ends_whole(trailing[:16], trailing[-64:], len(trailing), "png")
    bad_crc = body[:-1] + b"\x00"
    assert not image_ends_whole(bad_crc[:16], bad_crc[-64:], len(bad_crc), "png")


def test_jpeg_may_be_padded_with_zeros_after_eoi_but_nothing_else() -> None:
    body = image("jpeg")
    assert body.endswith(b"\xff\xd9")
    padded = body + b"\x00" * 512
    assert image_ends_whole(padded[:16], padded[-TAIL_BYTES:], len(padded), "jpeg")
    garbage = body + b"\x01"
    assert not image_ends_whole(garbage[:16], garbage[-TAIL_BYTES:], len(garbage), "jpeg")
    too_much = body + b"\x00" * TAIL_BYTES  # the EOI is out of sight: not whole
    assert not image_ends_whole(too_much[:16], too_much[-TAIL_BYTES:], len(too_much), "jpeg")


def test_webp_size_field_must_match_the_file_size() -> None:
    body = image("webp")
    assert image_ends_whole(body[:16], body[-16:], len(body), "webp")
    longer = body + b"\x00\x00"
    assert not image_ends_whole(longer[:16], longer[-16:], len(longer), "webp")
    assert sniff_image(body[:16]) == "webp"
