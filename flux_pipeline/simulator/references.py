"""Reference-image checks: can each of a task's ``image_urls`` be had, and is it an image?

``data:`` URIs are decoded here; ``http(s)`` URLs are fetched ONLY when their host is loopback
(127.0.0.0/8, ``localhost``, ``::1``), with a short timeout and no redirects. Every other host is
taken as reachable unless configured unreachable: the simulator never connects anywhere else.
A problem is a short reason string; ``None`` means the image is fine.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes, urlsplit

import httpx

from flux_pipeline.simulator.config import MAX_REFERENCE_BYTES

FETCH_TIMEOUT = 2.0
NOT_AN_IMAGE = "not a JPG, PNG or WebP image"
TOO_LARGE = "larger than 10 MB"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sniff(head: bytes) -> str | None:
    """The image format from the magic bytes: ``jpeg``, ``png``, ``webp``, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def decode_data_uri(uri: str) -> bytes:
    """The bytes of ``data:[<media type>][;base64],<data>``; ValueError when malformed."""
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ValueError("malformed data: URI (no comma)")
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("malformed data: URI (bad base64)") from exc
    return unquote_to_bytes(payload)


def check_bytes(data: bytes) -> str | None:
    if len(data) > MAX_REFERENCE_BYTES:
        return TOO_LARGE
    return None if sniff(data[:16]) else NOT_AN_IMAGE


@dataclass(frozen=True)
class Precheck:
    """What can be decided without the network: a problem, nothing, or URLs to fetch."""

    problem: str | None
    to_fetch: tuple[str, ...]


def precheck(urls: Iterable[str], unreachable_hosts: frozenset[str]) -> Precheck:
    to_fetch: list[str] = []
    for number, url in enumerate(urls, start=1):
        if url[:5].lower() == "data:":
            try:
                problem = check_bytes(decode_data_uri(url))
            except ValueError as exc:
                problem = str(exc)
            if problem:
                return Precheck(f"image {number}: {problem}", ())
            continue
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme.lower() not in ("http", "https") or not host:
            return Precheck(f"image {number}: not an http(s) or data: URL", ())
        if host in unreachable_hosts:
            return Precheck(f"image {number}: host {host} is unreachable", ())
        if is_loopback(host):
            to_fetch.append(url)
    return Precheck(None, tuple(to_fetch))


# The simulator's own reference fetches carry this header, so that download faults meant for
# the client under test never hit the simulated API's internal reads of its own results.
INTERNAL_HEADER = "X-Sim-Internal"


async def fetch_problem(client: httpx.AsyncClient, url: str) -> str | None:
    """Fetch one loopback URL (bounded size and time) and judge what came back."""
    try:
        headers = {INTERNAL_HEADER: "reference-fetch"}
        async with client.stream("GET", url, timeout=FETCH_TIMEOUT, headers=headers) as response:
            if response.status_code != 200:
                return f"{url} answered HTTP {response.status_code}"
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_REFERENCE_BYTES:
                return f"{url} is {TOO_LARGE}"
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > MAX_REFERENCE_BYTES:
                    return f"{url} is {TOO_LARGE}"
    except httpx.HTTPError as exc:
        return f"{url} could not be fetched ({type(exc).__name__})"
    problem = check_bytes(bytes(data))
    return f"{url} is {problem}" if problem else None
