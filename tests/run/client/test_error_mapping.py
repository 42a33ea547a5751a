"""One table: every (HTTP status, body code, body shape) the client can meet → typed result.

Each row is one answer to one call, with a single attempt (no retry) so the row shows the raw
mapping. docs/api-contract.md, ambiguity 1: a non-200 body ``code`` wins over HTTP 200, and an
HTTP error status wins even when the body is missing or not JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Literal

import httpx
import pytest

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiError,
    ApiTransportError,
    AuthError,
    InsufficientCreditsError,
    InvalidAnswerError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    RetryableError,
    ServerError,
    TaskAnswerError,
    TaskNotFoundError,
    TaskStatusError,
    TerminalApiError,
)
from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH, ApiState, TaskStatus, build_create_body

from .support import (
    FakeSleep,
    Handler,
    Script,
    envelope,
    raises,
    respond,
    single_attempt_client,
    status_data,
    success_data,
)

Call = Literal["create", "status"]
HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"
TASK = "task_1"
PENDING = TaskStatus(task_id=TASK, state=ApiState.PENDING)
UNSET: Any = object()

TWO_URLS = ("https://r.test/1.png", "https://r.test/2.png")
BAD_GZIP = b"{not gzip}"
# A success answer carrying fields the page never mentions, at every level.
VERBOSE_SUCCESS = {
    "code": 200,
    "message": "success",
    "traceId": "abc",
    "data": {
        **status_data(state="success", model="flux-kontext-pro", progress=100),
        "resultJson": json.dumps({"resultUrls": list(TWO_URLS), "seed": 7}),
    },
}


@dataclass(frozen=True)
class Row:
    id: str
    call: Call
    answer: Handler
    expect: type[ApiError] | None = None  # None: the call succeeds with ``result``
    result: Any = UNSET
    status: Any = UNSET  # expected err.status (HTTP status), when checked
    code: Any = UNSET  # expected err.code, when checked
    retry_after: Any = UNSET  # expected RateLimitedError.retry_after (approx), when checked
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


def _retry_after_date(seconds_ahead: float) -> Handler:
    """HTTP 429 with Retry-After as an HTTP date, computed when the request arrives."""

    def step(request: httpx.Request) -> httpx.Response:
        date = formatdate(time.time() + seconds_ahead, usegmt=True)
        return httpx.Response(429, headers={"Retry-After": date})

    return step


def _env(code: Any, message: str = "x", data: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def _both(
    id: str,
    answer: Handler,
    status_expect: type[ApiError],
    create_expect: type[ApiError],
    **kw: Any,
) -> list[Row]:
    return [
        Row(f"status-{id}", "status", answer, status_expect, **kw),
        Row(f"create-{id}", "create", answer, create_expect, **kw),
    ]


def _same(id: str, answer: Handler, expect: type[ApiError], **kw: Any) -> list[Row]:
    return _both(id, answer, expect, expect, **kw)


ROWS: list[Row] = [
    # --- HTTP 200, body code decides ---------------------------------------------------------
    Row("status-200-code200-ok", "status", respond(200, envelope(status_data())), result=PENDING),
    Row("create-200-code200-ok", "create", respond(200, envelope({"taskId": TASK})), result=TASK),
    *_same(
        "200-code429",
        respond(200, _env(429, "Rate limit exceeded")),
        RateLimitedError,
        status=200,
        code=429,
        retry_after=None,
    ),
    *_same(
        "200-code429-retry-after",
        respond(200, _env(429), headers={"Retry-After": "3"}),
        RateLimitedError,
        status=200,
        code=429,
        retry_after=3.0,
    ),
    *_same(
        "200-code401", respond(200, _env(401, "Invalid API key")), AuthError, status=200, code=401
    ),
    Row(
        "create-200-code400-credits",
        "create",
        respond(200, _env(400, "Insufficient credits")),
        InsufficientCreditsError,
        status=200,
        code=400,
    ),
    *_both(
        "200-code400-other",
        respond(200, _env(400, "invalid aspect_ratio")),
        TaskStatusError,  # a refused status call concerns that task, not the run
        InvalidRequestError,
        status=200,
        code=400,
    ),
    *_same(
        "200-code500", respond(200, _env(500, "internal error")), ServerError, status=200, code=500
    ),
    *_same("200-code503", respond(200, _env(503, "overloaded")), ServerError, status=200, code=503),
    Row(
        "status-200-code404",
        "status",
        respond(200, _env(404, "task not found")),
        TaskNotFoundError,
        status=200,
        code=404,
    ),
    # --- HTTP 429 whatever the body ----------------------------------------------------------
    *_same(
        "429-json",
        respond(429, _env(429, "Rate limit exceeded")),
        RateLimitedError,
        status=429,
        code=429,
        retry_after=None,
    ),
    *_same("429-empty", respond(429), RateLimitedError, status=429, code=429, retry_after=None),
    *_same(
        "429-text",
        respond(429, content=b"Too Many Requests"),
        RateLimitedError,
        status=429,
        code=429,
        retry_after=None,
    ),
    *_same("429-html", respond(429, content=HTML), RateLimitedError, status=429, code=429),
    *_same("429-json-code200", respond(429, _env(200)), RateLimitedError, status=429, code=429),
    *_same(
        "429-retry-after-seconds",
        respond(429, headers={"Retry-After": "7"}),
        RateLimitedError,
        status=429,
        retry_after=7.0,
    ),
    *_same(
        "429-retry-after-decimal",
        respond(429, headers={"Retry-After": "1.5"}),
        RateLimitedError,
        status=429,
        retry_after=1.5,
    ),
    *_same(
        "429-retry-after-date",
        _retry_after_date(120),
        RateLimitedError,
        status=429,
        retry_after=120.0,
    ),
    *_same(
        "429-retry-after-past-date",
        _retry_after_date(-3600),
        RateLimitedError,
        status=429,
        retry_after=0.0,
    ),
    *_same(
        "429-retry-after-garbage",
        respond(429, headers={"Retry-After": "soon"}),
        RateLimitedError,
        status=429,
        retry_after=None,
    ),
    # --- HTTP error statuses, empty and HTML bodies -------------------------------------------
    # a 5xx without the API's envelope may come from a gateway after the task was created:
    # retried on status, ambiguous on create (run/fate.py)
    *[
        row
        for http, status_expect, create_expect in [
            (401, AuthError, AuthError),
            (400, TaskStatusError, InvalidRequestError),
            (500, ServerError, AmbiguousCreateError),
            (502, ServerError, AmbiguousCreateError),
            (503, ServerError, AmbiguousCreateError),
            (504, ServerError, AmbiguousCreateError),
        ]
        for shape, body in [("empty", b""), ("html", HTML)]
        for row in _both(
            f"{http}-{shape}",
            respond(http, content=body),
            status_expect,
            create_expect,
            status=http,
            **({} if create_expect is AmbiguousCreateError else {"code": http}),
        )
    ],
    # ... a 5xx WITH the envelope is the API itself saying it failed: no task, retried
    *[
        row
        for http in (500, 502, 503)
        for row in _same(
            f"{http}-envelope",
            respond(http, _env(http, "internal error")),
            ServerError,
            status=http,
            code=http,
        )
    ],
    *_both(
        "502-json-not-envelope",
        respond(502, {"message": "Bad gateway"}),
        ServerError,
        AmbiguousCreateError,
        status=502,
    ),
    *_both(
        "504-envelope-code-string",
        respond(504, _env("504", "timeout")),
        ServerError,
        AmbiguousCreateError,
        status=504,
    ),
    *_same(
        "401-json",
        respond(401, _env(401, "Invalid or missing API Key")),
        AuthError,
        status=401,
        code=401,
    ),
    *_same(
        "400-json-credits-code",
        respond(400, _env(400, "Insufficient credits")),
        InsufficientCreditsError,
        status=400,
        code=400,
    ),
    # the envelope says success, the HTTP status says failure: the task may exist
    *_both(
        "500-json-code200",
        respond(500, _env(200, "success")),
        ServerError,
        AmbiguousCreateError,
        status=500,
    ),
    *_both("403-empty", respond(403), TaskStatusError, InvalidRequestError, status=403, code=403),
    *_both(
        "409-json",
        respond(409, _env(409, "conflict")),
        TaskStatusError,
        InvalidRequestError,
        status=409,
        code=409,
    ),
    *_both(
        "302-redirect",
        respond(302, headers={"Location": "https://elsewhere.test/"}),
        ProtocolError,  # not followed; retried, the redirect named
        InvalidRequestError,
        status=302,
    ),
    *_both(
        "307-redirect",
        respond(307, headers={"Location": "https://elsewhere.test/"}),
        ProtocolError,
        InvalidRequestError,
        status=307,
    ),
    # --- 404: unknown task on status; a wrong URL on create -----------------------------------
    Row("status-404-empty", "status", respond(404), TaskNotFoundError, status=404, code=404),
    Row("status-404-html", "status", respond(404, content=HTML), TaskNotFoundError, status=404),
    Row(
        "status-404-json",
        "status",
        respond(404, _env(404, "Task not found")),
        TaskNotFoundError,
        status=404,
        code=404,
    ),
    Row("create-404-html", "create", respond(404, content=HTML), InvalidRequestError, status=404),
    # --- HTTP 200 we cannot read: retryable on status, ambiguous on create --------------------
    *_both(
        "200-not-json",
        respond(200, content=b"<html>ok</html>"),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_both("200-empty", respond(200), ProtocolError, AmbiguousCreateError, status=200),
    *_both(
        "200-invalid-utf8",
        respond(200, content=b'{"code": 200, "message": "\xff\xfe"}'),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_both(
        "200-json-array",
        respond(200, [envelope({"taskId": TASK})]),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_both("200-json-string", respond(200, "success"), ProtocolError, AmbiguousCreateError),
    *_both(
        "200-no-code",
        respond(200, {"message": "success", "data": {"taskId": TASK}}),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_both(
        "200-bool-code-true",
        respond(200, _env(True, "success", {"taskId": TASK})),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_both(
        "200-string-code",
        respond(200, _env("200", "success", {"taskId": TASK})),
        ProtocolError,
        AmbiguousCreateError,
        status=200,
    ),
    *_same("429-bool-code", respond(429, _env(True)), RateLimitedError, status=429, code=429),
    Row("create-200-data-null", "create", respond(200, envelope(None)), AmbiguousCreateError),
    Row(
        "create-200-no-task-id",
        "create",
        respond(200, envelope({"id": TASK})),
        AmbiguousCreateError,
    ),
    Row(
        "create-200-empty-task-id",
        "create",
        respond(200, envelope({"taskId": ""})),
        AmbiguousCreateError,
    ),
    Row("status-200-data-null", "status", respond(200, envelope(None)), ProtocolError),
    # --- status data shapes -------------------------------------------------------------------
    Row(
        "status-unknown-state",
        "status",
        respond(200, envelope(status_data(state="queued"))),
        ProtocolError,
    ),
    Row("status-missing-state", "status", respond(200, envelope({"taskId": TASK})), ProtocolError),
    Row(
        "status-other-task", "status", respond(200, envelope(status_data("task_2"))), ProtocolError
    ),
    Row(
        "status-result-json-not-json",
        "status",
        respond(200, envelope(status_data(state="success", resultJson="{resultUrls: [x]"))),
        ProtocolError,
    ),
    Row(
        "status-success-without-result-json",
        "status",
        respond(200, envelope(status_data(state="success"))),
        ProtocolError,
    ),
    Row(
        "status-success-without-result-urls",
        "status",
        respond(200, envelope(status_data(state="success", resultJson='{"urls": []}'))),
        ProtocolError,
    ),
    Row(
        "status-success-empty-result-urls",
        "status",
        respond(200, envelope(status_data(state="success", resultJson='{"resultUrls": []}'))),
        ProtocolError,
    ),
    # terminal for that task only (docs/api-contract.md, "Caps on answers")
    Row(
        "status-result-url-not-http",
        "status",
        respond(200, envelope(success_data(urls=["file:///etc/passwd"]))),
        InvalidAnswerError,
    ),
    # a time that is not an integer is unknown, not a reason to poll again
    Row(
        "status-create-time-string",
        "status",
        respond(200, envelope(status_data(createTime="1767965610929"))),
        result=PENDING,
    ),
    Row(
        "status-processing",
        "status",
        respond(200, envelope(status_data(state="processing"))),
        result=TaskStatus(task_id=TASK, state=ApiState.PROCESSING),
    ),
    Row(
        "status-failed-unknown-fail-code",
        "status",
        respond(200, envelope(status_data(state="failed", failCode="NEW_CODE", failMsg="m"))),
        result=TaskStatus(task_id=TASK, state=ApiState.FAILED, fail_code="NEW_CODE", fail_msg="m"),
    ),
    Row(
        "status-result-json-as-object",
        "status",
        respond(
            200,
            envelope(
                status_data(state="success", resultJson={"resultUrls": ["https://r.test/o.png"]})
            ),
        ),
        result=TaskStatus(
            task_id=TASK, state=ApiState.SUCCESS, result_urls=("https://r.test/o.png",)
        ),
    ),
    Row(
        "status-float-times",
        "status",
        respond(200, envelope(status_data(createTime=1.0e12, costTime=5.0))),
        result=TaskStatus(task_id=TASK, state=ApiState.PENDING, create_time=10**12, cost_time=5),
    ),
    # --- forward compatibility: unknown fields are ignored ------------------------------------
    Row(
        "status-unknown-fields-ignored",
        "status",
        respond(200, VERBOSE_SUCCESS),
        result=TaskStatus(task_id=TASK, state=ApiState.SUCCESS, result_urls=TWO_URLS),
    ),
    Row(
        "create-unknown-fields-ignored",
        "create",
        respond(200, {**envelope({"taskId": TASK, "queue": 3}), "requestId": "r-1"}),
        result=TASK,
    ),
    # --- transport failures --------------------------------------------------------------------
    *_same("connect-error", raises(httpx.ConnectError), ApiTransportError),
    *_same("connect-timeout", raises(httpx.ConnectTimeout), ApiTransportError),
    *_same("pool-timeout", raises(httpx.PoolTimeout), ApiTransportError),
    *_both("read-timeout", raises(httpx.ReadTimeout), ApiTransportError, AmbiguousCreateError),
    *_both("write-timeout", raises(httpx.WriteTimeout), ApiTransportError, AmbiguousCreateError),
    *_both("write-error", raises(httpx.WriteError), ApiTransportError, AmbiguousCreateError),
    *_both(
        "remote-protocol-error",
        raises(httpx.RemoteProtocolError),
        ApiTransportError,
        AmbiguousCreateError,
    ),
    *_both("read-error", raises(httpx.ReadError), ApiTransportError, AmbiguousCreateError),
    # --- other 2xx: an answer, not an error (the task exists and is billed) ------------------
    Row("create-201-success", "create", respond(201, envelope({"taskId": TASK})), result=TASK),
    Row("create-202-success", "create", respond(202, envelope({"taskId": TASK})), result=TASK),
    Row("status-203-success", "status", respond(203, envelope(status_data())), result=PENDING),
    *_both("204-no-content", respond(204), ProtocolError, AmbiguousCreateError, status=204),
    # --- a 200 whose body does not match its Content-Encoding: garbled, not an httpx leak -----
    *_both(
        "200-bad-gzip",
        respond(200, content=BAD_GZIP, headers={"Content-Encoding": "gzip"}),
        ProtocolError,
        AmbiguousCreateError,
    ),
    # the HTTP error status is the error even when the body cannot be read (docs/api-contract.md)
    *[
        row
        for http, status_expect, create_expect in [
            (401, AuthError, AuthError),
            (429, RateLimitedError, RateLimitedError),
            (503, ServerError, AmbiguousCreateError),  # no envelope we can see: maybe a gateway
        ]
        for row in _both(
            f"{http}-bad-gzip",
            respond(http, content=BAD_GZIP, headers={"Content-Encoding": "gzip"}),
            status_expect,
            create_expect,
            status=http,
        )
    ],
]


def _params(rows: list[Row]) -> list[Any]:
    return [pytest.param(row, id=row.id, marks=row.marks) for row in rows]


async def _run(row: Row, sleep: FakeSleep) -> tuple[Any, Script]:
    script = Script(row.answer)
    async with single_attempt_client(script, sleep=sleep) as client:
        if row.call == "create":
            return await client.create_task(build_create_body({"input": {"prompt": "x"}})), script
        return await client.get_status(TASK), script


def test_table_ids_are_unique() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.anyio
@pytest.mark.parametrize("row", _params(ROWS))
async def test_answer_maps_to(row: Row) -> None:
    sleep = FakeSleep()
    if row.expect is None:
        result, script = await _run(row, sleep)
        assert result == row.result
        assert script.count == 1
        assert sleep.delays == []
        return

    with pytest.raises(ApiError) as info:
        await _run(row, sleep)
    err = info.value
    assert type(err) is row.expect, f"{type(err).__name__}: {err}"
    # exactly one attempt, and no waiting, whatever the class
    assert sleep.delays == []
    # context: which call, and what the server answered
    assert err.method == ("POST" if row.call == "create" else "GET")
    assert err.path == (CREATE_PATH if row.call == "create" else STATUS_PATH)
    assert str(err).startswith(f"{err.method} {err.path}: ")
    if row.status is not UNSET:
        assert err.status == row.status
    if row.code is not UNSET:
        assert err.code == row.code
    if row.retry_after is not UNSET:
        assert isinstance(err, RateLimitedError)
        if row.retry_after is None:
            assert err.retry_after is None
        else:
            assert err.retry_after == pytest.approx(row.retry_after, abs=1.5)
    # the retry question is answered by the class alone
    if isinstance(err, AmbiguousCreateError | AuthError | InvalidRequestError | TaskAnswerError):
        assert isinstance(err, TerminalApiError)
    if isinstance(err, RateLimitedError | ServerError | ProtocolError | ApiTransportError):
        assert isinstance(err, RetryableError)
    if isinstance(err, ApiTransportError):
        connect = row.id.split("-", 1)[1] in {"connect-error", "connect-timeout", "pool-timeout"}
        assert err.never_sent is connect


STATUS_ERROR_ROWS = [
    row for row in ROWS if row.call == "status" and row.expect is not None and not row.marks
]


def test_status_error_rows_include_terminal_and_retryable_kinds() -> None:
    kinds = {row.expect for row in STATUS_ERROR_ROWS}
    assert {AuthError, TaskStatusError, TaskNotFoundError, ProtocolError} <= kinds
    assert {RateLimitedError, ServerError, ApiTransportError} <= kinds


@pytest.mark.anyio
@pytest.mark.parametrize("row", _params(STATUS_ERROR_ROWS))
async def test_status_error_names_the_task(row: Row) -> None:
    """errors.py: errors carry their context; a status error says which taskId it was about."""
    with pytest.raises(ApiError) as info:
        await _run(row, FakeSleep())
    assert info.value.task_id == TASK
    assert f"taskId={TASK}" in str(info.value)
