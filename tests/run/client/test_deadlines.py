"""Per-request deadlines (run/client.py ``STATUS_DEADLINE``, run/downloads.py
``DOWNLOAD_DEADLINE``): a hostile server that sends one byte every 0.3 s never trips httpx's
read timeout (it is per read), and held a status call or a download open indefinitely. Now
each ends within its total deadline, as a retryable error, leaving nothing on disk.

The server is a real TCP server on loopback (a thread), speaking HTTP/1.1 by hand.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from flux_pipeline.errors import ApiTransportError, DownloadError
from flux_pipeline.run.client import STATUS_DEADLINE, ClientConfig, FluxClient, RetryPolicy
from flux_pipeline.run.downloads import DOWNLOAD_DEADLINE, download

PNG_START = b"\x89PNG\r\n\x1a\n"
BYTE_EVERY = 0.3


@contextmanager
def trickling(head: bytes, body: bytes) -> Iterator[str]:
    """A server answering every request with ``head`` at once, then ``body`` one byte every
    ``BYTE_EVERY`` seconds (it never ends within a test's time)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(head)
                for byte in body:
                    if stop.wait(BYTE_EVERY):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_the_deadlines_are_named_and_bounded() -> None:
    assert 0 < STATUS_DEADLINE <= 120
    assert 0 < DOWNLOAD_DEADLINE <= 600
    assert ClientConfig().status_deadline == STATUS_DEADLINE


@pytest.mark.anyio
async def test_a_trickled_status_answer_ends_at_the_deadline() -> None:
    body = b'{"code":200,"message":"success","data":{"taskId":"t","state":"pending"}}' * 50
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with trickling(head, body) as url:
        config = ClientConfig(base_url=url, status_deadline=1.0, retry=RetryPolicy(attempts=1))
        async with FluxClient(api_key="deadline-key", config=config) as client:
            started = time.monotonic()
            with pytest.raises(ApiTransportError) as raised:
                await client.get_status("t")
            took = time.monotonic() - started
    assert took < 3.0, took
    assert raised.value.never_sent is False
    assert "ReadTimeout" in str(raised.value)


@pytest.mark.anyio
async def test_a_trickled_download_ends_at_the_deadline(tmp_path: Path) -> None:
    body = PNG_START + b"\0" * 10_000
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    dest = tmp_path / "shot.png"
    with trickling(head, body) as url:
        async with httpx.AsyncClient(trust_env=False) as http:
            started = time.monotonic()
            with pytest.raises(DownloadError) as raised:
                await download(http, f"{url}/results/a.png", dest, deadline=1.0)
            took = time.monotonic() - started
    assert took < 3.0, took
    assert "longer than 1s" in str(raised.value)
    assert type(raised.value) is DownloadError  # retryable, not terminal
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
