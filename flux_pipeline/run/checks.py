"""Settings checked before anything is opened or billed (docs/exit-codes.md, "Refused before
the run"): the API's base URL and key, the callback receiver's ``--listen`` and
``--public-url``. Each rule raises ``UsageError`` (exit 2) with one line naming the setting;
the key itself is never shown.

The public URL probe (``probe_public_url``): a callback run whose ``--public-url`` would reach
this machine over loopback (its host is ``localhost``, a loopback address, or the ``--listen``
host) is probed once before the first create: the receiver answers a random token on
``PROBE_PREFIX``, fetched through the public URL. Any other public URL (a tunnel, a DNS name,
a NAT address) may well be reachable by the API and not from here, so it is not probed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from flux_pipeline.errors import UsageError
from flux_pipeline.run.api import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from flux_pipeline.run.store import Store

PROBE_PREFIX = "/flux-pipeline-probe/"
PROBE_SECONDS = 5.0  # the whole probe: connect, answer, body
_WILDCARDS = ("0.0.0.0", "::")  # noqa: S104 (names the addresses that are refused)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)


def check_base_url(url: str, *, name: str = "APIXO_BASE_URL") -> str:
    """``url`` without a trailing slash if it is an absolute http(s) URL with a host that
    httpx can send to; else ``UsageError``."""
    shown = repr(url)[:200]
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise UsageError(f"{name} must be an http(s) URL without spaces or control characters")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UsageError(f"{name} is not a valid URL ({exc}): {shown}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"{name} must be an http(s) URL with a host, got {shown}")
    if port is not None and not 0 < port <= 65535:
        raise UsageError(f"{name} has an invalid port: {shown}")
    return url.rstrip("/")


def check_api_key(key: str) -> str:
    """``key`` if it can be sent in an HTTP header as it is: printable ASCII only. The message
    names the position of the first bad character, never the key."""
    for index, char in enumerate(key):
        if not 0x20 <= ord(char) < 0x7F:
            kind = "a control character" if ord(char) < 0x80 else "a non-ASCII character"
            raise UsageError(
                f"APIXO_API_KEY contains {kind} (at position {index + 1}): copy the key again "
                "without line breaks or quotes"
            )
    return key


def endpoint_from_env(env: MutableMapping[str, str] | os._Environ[str]) -> Endpoint:
    key = env.get("APIXO_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "APIXO_API_KEY is not set: export your API key, or use --simulate to run against "
            "the built-in simulator"
        )
    base = env.get("APIXO_BASE_URL", "").strip() or DEFAULT_BASE_URL
    return Endpoint(base_url=check_base_url(base), api_key=check_api_key(key))


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> ``(host, port)``; the host must resolve here."""
    host, colon, port = listen.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen must be HOST:PORT with a port from 0 to 65535, got {listen!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        host = "127.0.0.1"
    if not _resolves(host):
        raise UsageError(f"--listen: the host {host!r} does not resolve to an address here")
    return host, int(port)


def _resolves(host: str) -> bool:
    try:
        return bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return False


def check_callback_urls(listen: str, public_url: str | None) -> None:
    """``--listen`` parses and resolves; a wildcard ``--listen`` needs ``--public-url`` (the
    API would be told to call ``http://0.0.0.0:...``); ``--public-url`` is an http(s) URL."""
    host, _ = parse_listen(listen)
    if public_url is None and host in _WILDCARDS:
        raise UsageError(
            f"--listen {listen} listens on every interface, but the API cannot call "
            f"http://{host}: pass --public-url with the address the API should use"
        )
    if public_url is not None:
        check_base_url(public_url, name="--public-url")


def probeable(public_url: str, listen_host: str) -> bool:
    """Whether ``public_url`` reaches this machine over loopback (or the ``--listen``
    host), so that fetching it from here says whether the receiver is behind it."""
    host = httpx.URL(public_url).host
    if host in ("localhost", listen_host):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Asgi = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class ProbedApp:
    """The receiver's ASGI app, answering ``GET PROBE_PREFIX<token>`` with the token."""

    def __init__(self, app: Asgi) -> None:
        self.app = app
        self.token = secrets.token_urlsafe(16)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("path") == PROBE_PREFIX + self.token:
            body = self.token.encode()
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def probe_public_url(public_url: str, token: str, *, listening: str) -> None:
    """Fetch the probe through ``public_url``; ``UsageError`` unless the receiver answers."""
    url = public_url.rstrip("/") + PROBE_PREFIX + token
    problem: str | None = None
    try:
        with anyio.fail_after(PROBE_SECONDS):
            async with httpx.AsyncClient(timeout=PROBE_SECONDS, trust_env=False) as http:
                answer = await http.get(url)
        if answer.status_code != 200 or answer.text != token:
            problem = f"it answered {answer.status_code}, not this run's receiver"
    except httpx.HTTPError as exc:
        problem = f"{type(exc).__name__}"
    except TimeoutError:
        problem = f"no answer within {PROBE_SECONDS:g}s"
    if problem is not None:
        raise UsageError(
            f"--public-url {public_url} does not reach this run's callback receiver "
            f"(listening on {listening}): {problem}; nothing was created"
        )


def check_step_summary(summary: str | None) -> None:
    """``$GITHUB_STEP_SUMMARY``, when set, must be a file the run can append to: found out
    only after the run, the report would be written but the command would fail."""
    if not summary:
        return
    path = Path(summary)
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise UsageError(
            f"GITHUB_STEP_SUMMARY={summary}: cannot append to it ({exc.strerror or exc})"
        ) from None


async def check_owner(store: Store, manifest: str, *, explicit: bool) -> None:
    """A state DB belongs to the manifest of its runs: one found at the default path (under
    ``--out``) that another manifest wrote is refused (its tasks would be reported as this
    one's, its report files overwritten). Naming it with ``--state`` uses it on purpose."""
    import sqlite3

    from flux_pipeline.errors import StateError

    try:
        last = await store.last_run()
    except sqlite3.Error as exc:
        raise StateError(f"{store.path}: cannot read the state DB: {exc}") from exc
    if explicit or last is None or last["manifest"] == manifest:
        return
    raise UsageError(
        f"{store.path} is the state DB of manifest {last['manifest']!r}, not {manifest!r}: "
        "use another --out, or pass --state to use it anyway"
    )
