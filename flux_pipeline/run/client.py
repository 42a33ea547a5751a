"""The API client: the only place where HTTP answers and httpx exceptions become our errors.

It sends each call, retries it by ``RetryPolicy`` (``retry``: which failures are retried, how
long to wait) and turns each answer into data or a typed error (``answers``), read within the
caps of ``caps`` (docs/api-contract.md, "Caps on answers"). Retries (docs/api-contract.md):
- 429 (HTTP status or body code) on any call: wait Retry-After (seconds or HTTP date) or a
  full-jitter backoff, and try again, up to ``RetryPolicy.rate_limit_attempts``.
- status calls: retried on 5xx of any kind, timeouts, dropped connections, redirects and
  unparseable answers.
- create calls: ``fate.create_fate`` decides ("What a create's answer means"): retried only
  when the request never left or the API's own envelope refused it; once it may have made a
  task (a gateway's 5xx page, read timeout, dropped connection, garbled 2xx), never retried:
  ``AmbiguousCreateError``.

Every attempt first takes a token from the shared ``RequestBudget`` (when one is given), then
one of ``max_connections`` slots held by our own limiter (httpcore #1093), then awaits the
create's ``before_send`` hook, and only then sends.
The API key lives only in the ``Authorization`` header; no message is built from headers.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
import httpx

from flux_pipeline import redact
from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiError,
    ApiTransportError,
    ProtocolError,
    RateLimitedError,
    RetryableError,
)
from flux_pipeline.run.answers import Answer, error_of, interpret
from flux_pipeline.run.api import (
    CREATE_PATH,
    DEFAULT_BASE_URL,
    STATUS_PATH,
    TaskStatus,
    parse_status,
)
from flux_pipeline.run.caps import one_line, read_capped
from flux_pipeline.run.fate import NEVER_SENT_ERRORS, Fate, create_fate
from flux_pipeline.run.retry import RetryPolicy

__all__ = ["BeforeSend", "ClientConfig", "FluxClient", "RequestBudget", "RetryPolicy"]

T = TypeVar("T")
BeforeSend = Callable[[], Awaitable[None]]

# A create waits this long at least for its answer: a read timeout makes it ambiguous (the
# task may exist), so giving up early costs more than waiting (docs/api-contract.md).
CREATE_READ_TIMEOUT = 60.0
# Pooled connections idle longer than this are closed, not reused: a server closing an idle
# connection as we send on it makes a create ambiguous, and this stays below common server
# idle timeouts (uvicorn, Node.js, Apache: 5 s; load balancers: 60 s; nginx: 75 s). At the
# request rates that matter a connection is reused long before (docs/api-contract.md).
KEEPALIVE_EXPIRY = 4.0
# A status call's whole exchange (send, answer, body) ends within this, however the server
# paces its bytes: httpx's read timeout is per read, so a server sending one byte every few
# seconds would hold the call open for ever. Past it the call counts as a timeout (retried).
# Creates have none: giving up on a create makes it ambiguous (docs/api-contract.md).
STATUS_DEADLINE = 60.0


class _HookError(Exception):
    """Carries what ``before_send`` raised past the retry loop (never retried, never ours)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


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
    create_read_timeout: float = CREATE_READ_TIMEOUT  # a create's read timeout, at least
    status_deadline: float = STATUS_DEADLINE  # a status call's whole exchange, at most

    @property
    def create_timeout(self) -> httpx.Timeout:
        """``timeout`` with its read part raised to ``create_read_timeout`` (never lowered)."""
        read = self.timeout.read
        if read is not None:
            read = max(read, self.create_read_timeout)
        return httpx.Timeout(
            connect=self.timeout.connect,
            read=read,
            write=self.timeout.write,
            pool=self.timeout.pool,
        )

    def __repr__(self) -> str:
        return (
            f"ClientConfig(base_url={self.base_url!r}, max_connections={self.max_connections}, "
            f"retry={self.retry!r})"
        )


# shorter keys (test keys like "k") would match ordinary text and corrupt every answer
MIN_REDACTED_KEY = redact.MIN_SECRET_CHARS


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
        self._secret_bytes = api_key.encode()
        redact.register(api_key)  # every output of this process redacts it (docs/secrets.md)
        self.config = config or ClientConfig()
        self._budget = budget
        self._sleep = sleep
        self._jitter = jitter
        self._limiter = anyio.CapacityLimiter(self.config.max_connections)
        limits = httpx.Limits(
            max_connections=self.config.max_connections,
            max_keepalive_connections=self.config.max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY,
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
        before_send: BeforeSend | None = None,
    ) -> str:
        """Create a task; returns its taskId. ``body`` is the whole create body
        (see ``api.build_create_body``). What each outcome raises: ``fate.create_fate``
        (``AmbiguousCreateError`` when the task may exist: never retried).

        ``speculative``: the caller sent it betting that a task it has not yet seen finish
        has freed its slot; a 429 is then raised at once, without retrying and without
        slowing the shared budget (it most likely means "too many tasks", not "too many
        requests").

        ``before_send``: awaited on every attempt once the attempt holds its budget token
        and its connection slot, right before the request is sent (a retried create calls
        it again: it must be idempotent). If it raises, nothing is sent, the slot is freed
        and its exception propagates (the token stays spent). A cancellation while waiting
        for the token or the slot never calls it. With a hook the client does not retry a
        create that created nothing (429, 5xx with the API's envelope, never sent): it raises
        at once, so the caller, who marked the task as being sent, can put it back before any
        wait (a stop during a backoff must not leave a never-sent task looking sent)."""
        payload = dict(body)

        async def attempt() -> str:
            return await self._create_once(payload, before_send)

        try:
            return await self._retrying(attempt, speculative=speculative, retry=before_send is None)
        except _HookError as hook:  # the caller's own exception, as it raised it, unretried
            raise hook.error from hook.error.__cause__
        except ApiError as exc:
            self._fill(exc, "POST", CREATE_PATH, None)
            raise

    async def get_status(self, task_id: str) -> TaskStatus:
        async def attempt() -> TaskStatus:
            return await self._status_once(task_id)

        try:
            status = await self._retrying(attempt)
        except ApiError as exc:
            self._fill(exc, "GET", STATUS_PATH, task_id)
            raise
        return _redacted(status)

    def _fill(self, exc: ApiError, method: str, path: str, task_id: str | None) -> None:
        """Context on every error, and never let a server that echoes a secret (in any
        encoding: ``redact``) make us print it."""
        exc.method = exc.method or method
        exc.path = exc.path or path
        exc.task_id = exc.task_id or task_id
        message = redact.scrub(exc.message)
        if message != exc.message:
            exc.message = message
            exc.args = (message,)

    async def _create_once(self, body: dict[str, Any], before_send: BeforeSend | None) -> str:
        ctx: dict[str, Any] = {"method": "POST", "path": CREATE_PATH}
        outcome: Answer | httpx.TransportError
        try:
            outcome = await self._exchange(
                "POST", CREATE_PATH, json=body, creating=True, before_send=before_send
            )
        except httpx.TransportError as exc:
            outcome = exc
        decided = create_fate(outcome)
        cause = outcome if isinstance(outcome, httpx.TransportError) else None
        status = outcome.status if isinstance(outcome, Answer) else None
        if decided.fate is Fate.CREATED and decided.task_id is not None:
            return decided.task_id
        if decided.fate is Fate.NEVER_SENT:
            raise ApiTransportError(decided.reason, never_sent=True, **ctx) from cause
        if decided.fate is Fate.NOT_CREATED and isinstance(outcome, Answer):
            error = error_of(outcome, **ctx)
            if error is not None:
                raise error
        raise AmbiguousCreateError(decided.reason, status=status, **ctx) from cause

    async def _status_once(self, task_id: str) -> TaskStatus:
        ctx: dict[str, Any] = {"method": "GET", "path": STATUS_PATH}
        try:
            answer = await self._exchange(
                "GET", STATUS_PATH, params={"taskId": task_id}, creating=False
            )
        except NEVER_SENT_ERRORS as exc:
            name = type(exc).__name__
            raise ApiTransportError(f"could not connect: {name}", never_sent=True, **ctx) from exc
        except httpx.TransportError as exc:
            name = type(exc).__name__
            raise ApiTransportError(f"connection failed: {name}", never_sent=False, **ctx) from exc
        data = interpret(answer, **ctx)
        about = data.get("taskId") if isinstance(data, Mapping) else None
        if isinstance(about, str) and about and about != task_id:  # before its fields count
            raise ProtocolError(f"asked for {task_id}, answer is about {one_line(about, 80)}")
        return parse_status(data)

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        speculative: bool = False,
        retry: bool = True,
    ) -> T:
        """``attempt`` until it succeeds or the policy gives up; ``retry=False``: once (the
        budget still learns of a 429)."""
        policy = self.config.retry
        failures = 0
        rate_limits = 0
        while True:
            try:
                return await attempt()
            except RateLimitedError as exc:
                if speculative:
                    raise
                rate_limits += 1
                if self._budget is not None:
                    self._budget.rate_limited(exc.retry_after)
                if not retry or rate_limits >= policy.rate_limit_attempts:
                    raise
                delay = exc.retry_after
                if delay is None:
                    delay = self._backoff(rate_limits)
                await self._sleep(delay)
            except RetryableError:
                failures += 1
                if not retry or failures >= policy.attempts:
                    raise
                await self._sleep(self._backoff(failures))

    def _backoff(self, attempt: int) -> float:
        return self.config.retry.backoff(attempt, self._jitter())

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        creating: bool,
        before_send: BeforeSend | None = None,
    ) -> Answer:
        """One attempt: a budget token, a connection slot, the hook, the request, its body
        read within ``MAX_ANSWER_BYTES``. httpx transport errors propagate as they are."""
        if self._budget is not None:
            await self._budget.acquire(urgent=creating)
        timeout = self.config.create_timeout if creating else self.config.timeout
        request = self._http.build_request(method, path, json=json, params=params, timeout=timeout)
        async with self._limiter:
            if before_send is not None:
                try:
                    await before_send()
                except Exception as exc:
                    raise _HookError(exc) from exc
            deadline = None if creating else self.config.status_deadline
            try:
                with anyio.fail_after(deadline):
                    response = await self._http.send(request, stream=True)
                    try:
                        content = await read_capped(response)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                if deadline is None:
                    raise
                raise httpx.ReadTimeout(
                    f"no whole answer within {deadline:g}s", request=request
                ) from exc
        # a server that echoes the key must not make us print it, even in part after a cut
        if isinstance(content, bytes) and len(self._secret_bytes) >= MIN_REDACTED_KEY:
            content = content.replace(self._secret_bytes, b"[redacted]")
        return Answer.of(response.status_code, response.headers, content)


def _redacted(status: TaskStatus) -> TaskStatus:
    """A status with every secret redacted from what the API wrote (its taskId excepted: it
    is what we asked about, compared exactly)."""
    scrub = redact.scrub
    urls = tuple(scrub(url) for url in status.result_urls)
    code = None if status.fail_code is None else scrub(status.fail_code)
    msg = None if status.fail_msg is None else scrub(status.fail_msg)
    if (urls, code, msg) == (status.result_urls, status.fail_code, status.fail_msg):
        return status
    return dataclasses.replace(status, result_urls=urls, fail_code=code, fail_msg=msg)
