"""The API client: the only place where HTTP answers and httpx exceptions become our errors.

It sends each call, retries it by ``RetryPolicy`` (``retry``: which failures are retried, how
long to wait) and turns each answer into data or a typed error (``answers.interpret``).
Retries (docs/api-contract.md):
- 429 (HTTP status or body code) on any call: wait Retry-After (seconds or HTTP date) or a
  full-jitter backoff, and try again, up to ``RetryPolicy.rate_limit_attempts``.
- status calls: retried on 5xx, timeouts, dropped connections and unparseable answers.
- create calls: retried on 5xx answers and on transport errors that provably happened before
  the request left (connect error, pool timeout). Once it may have left (read timeout, dropped
  connection, garbled 200), a create is never retried: ``AmbiguousCreateError``.

Every attempt first takes a token from the shared ``RequestBudget`` (when one is given), and at
most ``max_connections`` requests are in flight, held by our own limiter (httpcore #1093).
The API key lives only in the ``Authorization`` header; no message is built from headers.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import httpx

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiError,
    ApiTransportError,
    ProtocolError,
    RateLimitedError,
    RetryableError,
)
from flux_pipeline.run.answers import interpret
from flux_pipeline.run.api import (
    CREATE_PATH,
    DEFAULT_BASE_URL,
    STATUS_PATH,
    TaskStatus,
    parse_status,
)
from flux_pipeline.run.retry import RetryPolicy

__all__ = ["ClientConfig", "FluxClient", "RequestBudget", "RetryPolicy"]


class RequestBudget(Protocol):
    """The engine's shared request budget. The client asks before every attempt."""

    async def acquire(self, *, urgent: bool = False) -> None: ...

    def rate_limited(self, retry_after: float | None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    base_url: str = DEFAULT_BASE_URL
    timeout: httpx.Timeout = field(
        default_factory=lambda: httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)
    )
    max_connections: int = 100
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    user_agent: str = "flux-pipeline"

    def __repr__(self) -> str:
        return (
            f"ClientConfig(base_url={self.base_url!r}, max_connections={self.max_connections}, "
            f"retry={self.retry!r})"
        )


# shorter keys (test keys like "k") would match ordinary text and corrupt every answer
MIN_REDACTED_KEY = 8

_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


class FluxClient:
    """Async client of the Flux Kontext task API. Use as an async context manager."""

    def __init__(
        self,
        *,
        api_key: str,
        config: ClientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: RequestBudget | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not api_key:
            raise ValueError("api_key is empty")
        self._secret = api_key
        self._secret_bytes = api_key.encode()
        self.config = config or ClientConfig()
        self._budget = budget
        self._sleep = sleep
        self._jitter = jitter
        self._limiter = anyio.CapacityLimiter(self.config.max_connections)
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
        )
        self._http = httpx.AsyncClient(
            base_url=self.config.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": self.config.user_agent},
            timeout=self.config.timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"FluxClient({self.config!r})"

    async def __aenter__(self) -> FluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Create a task; returns its taskId. ``body`` is the whole create body
        (see ``api.build_create_body``). Raises ``AmbiguousCreateError`` when the request may
        have reached the API but its answer was lost.

        ``speculative``: the caller sent it betting that a task it has not yet seen finish
        has freed its slot; a 429 is then raised at once, without retrying and without
        slowing the shared budget (it most likely means "too many tasks", not "too many
        requests").

        ``before_send``: awaited once per attempt, after the budget token and the connection
        slot are held, right before the request is sent (the engine records ``submitting``
        there, so a task still waiting for a token was never sent)."""

        def task_id_of(data: Any) -> str:
            task_id = data.get("taskId") if isinstance(data, Mapping) else None
            if not isinstance(task_id, str) or not task_id:
                raise AmbiguousCreateError(
                    "create answered success without a taskId", method="POST", path=CREATE_PATH
                )
            return task_id

        result: str = await self._call(
            "POST",
            CREATE_PATH,
            task_id_of,
            json=dict(body),
            speculative=speculative,
            before_send=before_send,
        )
        return result

    async def get_status(self, task_id: str) -> TaskStatus:
        def status_of(data: Any) -> TaskStatus:
            status = parse_status(data)
            if status.task_id != task_id:
                raise ProtocolError(f"asked for {task_id}, answer is about {status.task_id}")
            return status

        result: TaskStatus = await self._call(
            "GET", STATUS_PATH, status_of, params={"taskId": task_id}, task_id=task_id
        )
        return result

    def _redact(self, exc: ApiError) -> None:
        """Never let a server that echoes the key make us print it."""
        if self._secret in exc.message:
            exc.message = exc.message.replace(self._secret, "[redacted]")
            exc.args = (exc.message,)

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], Any],
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        task_id: str | None = None,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        try:
            return await self._retrying(
                method,
                path,
                parse,
                json=json,
                params=params,
                speculative=speculative,
                before_send=before_send,
            )
        except ApiError as exc:
            exc.method = exc.method or method
            exc.path = exc.path or path
            exc.task_id = exc.task_id or task_id
            self._redact(exc)
            raise

    async def _retrying(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], Any],
        *,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        creating = method == "POST"
        policy = self.config.retry
        failures = 0
        rate_limits = 0
        while True:
            try:
                data = await self._attempt(
                    method,
                    path,
                    json=json,
                    params=params,
                    creating=creating,
                    before_send=before_send,
                )
                try:
                    return parse(data)
                except ProtocolError as exc:
                    if creating:  # a 200 we cannot read: the task may exist
                        raise AmbiguousCreateError(
                            f"create answered something unreadable ({exc.message})",
                            method=method,
                            path=path,
                        ) from exc
                    raise
            except RateLimitedError as exc:
                if speculative:
                    raise
                rate_limits += 1
                if self._budget is not None:
                    self._budget.rate_limited(exc.retry_after)
                if rate_limits >= policy.rate_limit_attempts:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = self._backoff(rate_limits)
                await self._sleep(delay)
            except RetryableError:
                failures += 1
                if failures >= policy.attempts:
                    raise
                await self._sleep(self._backoff(failures))

    def _backoff(self, attempt: int) -> float:
        return self.config.retry.backoff(attempt, self._jitter())

    async def _attempt(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
        creating: bool,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        if self._budget is not None:
            await self._budget.acquire(urgent=creating)
        request = self._http.build_request(method, path, json=json, params=params)
        async with self._limiter:
            if before_send is not None:
                await before_send()
            try:
                response = await self._http.send(request, stream=True)
                try:
                    content: bytes | None = await response.aread()
                except httpx.DecodingError:
                    content = None  # the body does not match its Content-Encoding
                finally:
                    await response.aclose()
            except _NEVER_SENT as exc:
                raise ApiTransportError(
                    f"could not connect: {type(exc).__name__}",
                    never_sent=True,
                    method=method,
                    path=path,
                ) from exc
            except httpx.TransportError as exc:
                if creating:
                    raise AmbiguousCreateError(
                        f"create sent but its answer was lost ({type(exc).__name__})",
                        method=method,
                        path=path,
                    ) from exc
                raise ApiTransportError(
                    f"connection failed: {type(exc).__name__}",
                    never_sent=False,
                    method=method,
                    path=path,
                ) from exc
        status = response.status_code
        if content is None:
            if not 200 <= status < 300:
                content = b""  # the status alone is the answer
            elif creating:
                raise AmbiguousCreateError(
                    "create answered a body that cannot be decoded", method=method, path=path
                )
            else:
                raise ProtocolError("answer body cannot be decoded", method=method, path=path)
        # a server that echoes the key must not make us print it, even in part after a cut
        if len(self._secret_bytes) >= MIN_REDACTED_KEY:
            content = content.replace(self._secret_bytes, b"[redacted]")
        try:
            return interpret(status, response.headers, content, method=method, path=path)
        except ProtocolError as exc:
            if creating:
                raise AmbiguousCreateError(
                    f"create answered something unreadable ({exc.message})",
                    method=method,
                    path=path,
                    status=status,
                ) from exc
            raise
