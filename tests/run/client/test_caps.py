"""Hostile status (and create) answers are contained: one table, each side of each cap.

docs/api-contract.md, "Caps on answers". Each row is one answer to one call with a single
attempt; a row either succeeds with ``result`` (or ``check`` on the TaskStatus) or raises
exactly ``expect``, whose one-line message contains ``says``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiError,
    AuthError,
    InvalidAnswerError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TaskAnswerError,
    TaskNotFoundError,
    TaskStatusError,
    TerminalApiError,
    is_retryable,
)
from flux_pipeline.run.api import ApiState, TaskStatus, build_create_body
from flux_pipeline.run.caps import (
    MAX_ANSWER_BYTES,
    MAX_FAIL_CODE_CHARS,
    MAX_JSON_DEPTH,
    MAX_RESULT_URLS,
    MAX_TEXT_CHARS,
    MAX_TIME,
    MAX_URL_CHARS,
    TooDeepError,
    json_depth,
    loads,
    one_line,
)

from .support import (
    FakeSleep,
    Handler,
    Script,
    envelope,
    respond,
    single_attempt_client,
    status_data,
    success_data,
)

Call = Literal["create", "status"]
TASK = "task_1"
PENDING = TaskStatus(task_id=TASK, state=ApiState.PENDING)
UNSET: Any = object()


@dataclass(frozen=True)
class Row:
    id: str
    call: Call
    answer: Handler
    expect: type[ApiError] | None = None
    result: Any = UNSET
    check: Callable[[TaskStatus], bool] | None = None
    says: str = ""


def raw(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    return respond(status, content=content, headers=headers)


def sized(total: int, *, state: str = "pending") -> bytes:
    """A valid status answer of exactly ``total`` bytes (padded in an unknown field)."""
    base = json.dumps(envelope({**status_data(state=state), "pad": ""})).encode()
    pad = total - len(base)
    assert pad >= 0
    return json.dumps(envelope({**status_data(state=state), "pad": "x" * pad})).encode()


def nested(depth: int) -> bytes:
    """A status answer nested exactly ``depth`` deep: envelope (1), data (2), then lists."""
    lists = depth - 2
    data = json.dumps(status_data())[:-1] + ', "extra": ' + "[" * lists + "]" * lists + "}"
    return ('{"code": 200, "message": "ok", "data": ' + data + "}").encode()


def result_json(raw_json: str) -> Handler:
    return respond(200, envelope(status_data(state="success", resultJson=raw_json)))


def urls(*items: Any) -> Handler:
    return respond(200, envelope(success_data(urls=list(items))))


def times(**fields: Any) -> Handler:
    return respond(200, envelope(status_data(**fields)))


def failed(**fields: Any) -> Handler:
    return respond(200, envelope(status_data(state="failed", **fields)))


def failed_raw(fields: str) -> Handler:
    """A failed status whose failure fields are written as raw JSON text (escapes intact)."""
    data = '{"taskId": "task_1", "state": "failed", ' + fields + "}"
    return raw(('{"code": 200, "message": "ok", "data": ' + data + "}").encode())


def url_of(length: int) -> str:
    base = "https://r.test/"
    return base + "a" * (length - len(base) - 4) + ".png"


DEEP = b'{"code": 200, "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
UNCLOSED = b'{"code": 200, "data": ' + b"[" * 100_000
BOMB = gzip.compress(json.dumps(envelope({"pad": "0" * (2 * MAX_ANSWER_BYTES)})).encode())
DEEP_RESULT = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH  # 64 deep inside resultJson
TOO_LONG = "m" * (MAX_TEXT_CHARS + 1)


def with_state(state: Any) -> Handler:
    return respond(200, envelope({"taskId": TASK, "state": state}))


ROWS: list[Row] = [
    # --- MAX_ANSWER_BYTES ----------------------------------------------------------------------
    Row("bytes-at-cap", "status", raw(sized(MAX_ANSWER_BYTES)), result=PENDING),
    Row(
        "bytes-over-cap",
        "status",
        raw(sized(MAX_ANSWER_BYTES + 1)),
        ProtocolError,
        says="answer larger than 1 MiB",
    ),
    Row(
        "bytes-declared-over-cap",
        "status",
        raw(b"{}", headers={"Content-Length": str(MAX_ANSWER_BYTES + 1)}),
        ProtocolError,
        says="answer larger than 1 MiB",
    ),
    Row(
        "bytes-gzip-expands-over-cap",
        "status",
        raw(BOMB, headers={"Content-Encoding": "gzip"}),
        ProtocolError,
        says="answer larger than 1 MiB",
    ),
    Row("bytes-over-cap-create", "create", raw(sized(MAX_ANSWER_BYTES + 1)), AmbiguousCreateError),
    # an HTTP error status is the error even when its body is too large to read
    Row("bytes-over-cap-503", "status", raw(sized(MAX_ANSWER_BYTES + 1), 503), ServerError),
    Row("bytes-over-cap-401", "status", raw(sized(MAX_ANSWER_BYTES + 1), 401), AuthError),
    # --- MAX_JSON_DEPTH ------------------------------------------------------------------------
    Row("depth-at-cap", "status", raw(nested(MAX_JSON_DEPTH)), result=PENDING),
    Row(
        "depth-over-cap",
        "status",
        raw(nested(MAX_JSON_DEPTH + 1)),
        ProtocolError,
        says=f"nested deeper than {MAX_JSON_DEPTH}",
    ),
    Row("depth-100000", "status", raw(DEEP), ProtocolError, says="nested deeper"),
    Row("depth-100000-unclosed", "status", raw(UNCLOSED), ProtocolError),
    Row("depth-100000-create", "create", raw(DEEP), AmbiguousCreateError),
    Row("depth-100000-500-status", "status", raw(DEEP, 500), ServerError),
    Row("depth-100000-500-create", "create", raw(DEEP, 500), AmbiguousCreateError),
    Row(
        "depth-brackets-in-strings-not-counted",
        "status",
        respond(200, envelope(status_data(state="failed", failMsg="[{" * 5000))),
        check=lambda s: s.fail_msg is not None and s.fail_msg.startswith("[{[{"),
    ),
    Row(
        "depth-result-json-at-cap",
        "status",
        result_json(
            json.dumps(
                {
                    "resultUrls": ["https://r.test/a.png"],
                    "x": json.loads("[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)),
                }
            )
        ),
        check=lambda s: s.result_urls == ("https://r.test/a.png",),
    ),
    Row(
        "depth-result-json-over-cap",
        "status",
        result_json('{"resultUrls": ["https://r.test/a.png"], "x": ' + DEEP_RESULT + "}"),
        ProtocolError,
        says="resultJson nested deeper",
    ),
    # --- MAX_RESULT_URLS -----------------------------------------------------------------------
    Row(
        "urls-at-cap",
        "status",
        urls(*[f"https://r.test/{i}.png" for i in range(MAX_RESULT_URLS)]),
        check=lambda s: len(s.result_urls) == MAX_RESULT_URLS,
    ),
    Row(
        "urls-over-cap",
        "status",
        urls(*[f"https://r.test/{i}.png" for i in range(MAX_RESULT_URLS + 1)]),
        InvalidAnswerError,
        says=f"more than {MAX_RESULT_URLS}",
    ),
    # --- each result URL: absolute http(s), accepted by httpx, at most MAX_URL_CHARS -------------
    Row(
        "url-ipv6-unclosed",
        "status",
        urls("http://[::1"),
        InvalidAnswerError,
        says="not an absolute http(s) URL",
    ),
    Row("url-no-host", "status", urls("https:///a.png"), InvalidAnswerError),
    Row("url-relative", "status", urls("/results/a.png"), InvalidAnswerError),
    Row("url-ftp", "status", urls("ftp://r.test/a.png"), InvalidAnswerError),
    Row("url-javascript", "status", urls("javascript:alert(1)"), InvalidAnswerError),
    Row(
        "url-one-bad-among-good",
        "status",
        urls("https://r.test/a.png", "http://[::1"),
        InvalidAnswerError,
    ),
    Row(
        "url-http-ok",
        "status",
        urls("http://127.0.0.1:8080/results/a.png"),
        check=lambda s: s.result_urls == ("http://127.0.0.1:8080/results/a.png",),
    ),
    Row(
        "url-length-at-cap",
        "status",
        urls(url_of(MAX_URL_CHARS)),
        check=lambda s: len(s.result_urls[0]) == MAX_URL_CHARS,
    ),
    Row(
        "url-length-over-cap",
        "status",
        urls(url_of(MAX_URL_CHARS + 1)),
        InvalidAnswerError,
        says=f"longer than {MAX_URL_CHARS}",
    ),
    Row("url-not-a-string", "status", urls(123), ProtocolError),
    # --- times: integers in 0..2**63-1, else unknown -----------------------------------------
    Row("time-zero", "status", times(createTime=0), check=lambda s: s.create_time == 0),
    Row(
        "time-at-max",
        "status",
        times(completeTime=MAX_TIME),
        check=lambda s: s.complete_time == MAX_TIME,
    ),
    Row("time-over-max", "status", times(costTime=MAX_TIME + 1), result=PENDING),
    Row("time-2-70", "status", times(costTime=2**70), result=PENDING),
    Row("time-negative", "status", times(createTime=-1), result=PENDING),
    Row("time-fraction", "status", times(costTime=1.5), result=PENDING),
    Row("time-bool", "status", times(costTime=True), result=PENDING),
    Row("time-huge-float", "status", times(costTime=1e300), result=PENDING),
    Row("time-object", "status", times(costTime={"ms": 5}), result=PENDING),
    Row(
        "time-nan-infinity",
        "status",
        raw(
            b'{"code": 200, "data": {"taskId": "task_1", "state": "pending", '
            b'"createTime": NaN, "costTime": Infinity}}'
        ),
        result=PENDING,
    ),
    # --- state: exactly one of the four -------------------------------------------------------
    Row("state-upper-case", "status", with_state("PENDING"), ProtocolError, says="unknown task"),
    Row("state-number", "status", with_state(1), ProtocolError),
    Row("state-null", "status", with_state(None), ProtocolError),
    Row("state-list", "status", with_state(["pending"]), ProtocolError),
    Row("state-newline", "status", with_state("pending\n"), ProtocolError),
    # --- failCode / failMsg: one capped line ---------------------------------------------------
    Row(
        "fail-msg-newlines-escaped",
        "status",
        failed(failCode="X", failMsg="line one\nline two\r\n"),
        check=lambda s: s.fail_msg == "line one\\nline two\\r\\n",
    ),
    Row(
        "fail-msg-terminal-escape",
        "status",
        failed(failMsg="\x1b[31mred\x1b[0m"),
        check=lambda s: s.fail_msg == "\\x1b[31mred\\x1b[0m",
    ),
    Row(
        "fail-msg-line-separator-and-surrogate",
        "status",
        failed_raw('"failMsg": "a\\u2028b\\ud800c"'),
        check=lambda s: s.fail_msg == "a\\u2028b\\ud800c",
    ),
    Row(
        "fail-msg-at-cap",
        "status",
        failed(failMsg="m" * MAX_TEXT_CHARS),
        check=lambda s: s.fail_msg == "m" * MAX_TEXT_CHARS,
    ),
    Row(
        "fail-msg-over-cap",
        "status",
        failed(failMsg=TOO_LONG),
        check=lambda s: s.fail_msg == "m" * (MAX_TEXT_CHARS - 3) + "...",
    ),
    Row(
        "fail-code-at-cap",
        "status",
        failed(failCode="C" * MAX_FAIL_CODE_CHARS),
        check=lambda s: s.fail_code == "C" * MAX_FAIL_CODE_CHARS,
    ),
    Row(
        "fail-code-over-cap",
        "status",
        failed(failCode="C" * (MAX_FAIL_CODE_CHARS + 1)),
        check=lambda s: s.fail_code is not None and len(s.fail_code) == MAX_FAIL_CODE_CHARS,
    ),
    Row(
        "fail-code-newline",
        "status",
        failed(failCode="BAD\nCODE"),
        check=lambda s: s.fail_code == "BAD\\nCODE",
    ),
    # --- redirects on status: not followed, retryable, named ---------------------------------
    *[
        Row(
            f"status-{http}-redirect",
            "status",
            respond(http, headers={"Location": "https://elsewhere.test/"}),
            ProtocolError,
            says=f"redirect (HTTP {http}), not followed",
        )
        for http in (301, 302, 303, 307, 308)
    ],
    # --- 4xx on status: that task's problem (401/404/429 keep their meaning) -------------------
    *[
        Row(f"status-{http}", "status", respond(http), TaskStatusError, says="for this task")
        for http in (400, 403, 405, 409, 410, 413, 422)
    ],
    Row("status-401", "status", respond(401), AuthError),
    Row("status-404", "status", respond(404), TaskNotFoundError),
    Row("status-429", "status", respond(429), RateLimitedError),
    Row(
        "status-400-message-one-line",
        "status",
        respond(400, {"code": 400, "message": "bad\nthing\x1b[2J", "data": None}),
        TaskStatusError,
        says="bad\\nthing\\x1b[2J",
    ),
]


async def _run(row: Row) -> tuple[Any, Script]:
    script = Script(row.answer)
    async with single_attempt_client(script, sleep=FakeSleep()) as client:
        if row.call == "create":
            return await client.create_task(build_create_body({"input": {"prompt": "x"}})), script
        return await client.get_status(TASK), script


def test_table_ids_are_unique() -> None:
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.mark.anyio
@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
async def test_hostile_answer(row: Row) -> None:
    if row.expect is None:
        result, script = await _run(row)
        assert script.count == 1
        if row.check is not None:
            assert isinstance(result, TaskStatus)
            assert row.check(result), result
        else:
            assert result == row.result
        return
    with pytest.raises(ApiError) as info:
        await _run(row)
    err = info.value
    assert type(err) is row.expect, f"{type(err).__name__}: {err}"
    text = str(err)
    assert "\n" not in text
    assert "\r" not in text
    assert "\x1b" not in text
    assert len(text) < 1000
    assert row.says in text
    if row.call == "status":
        assert err.task_id == TASK


def test_task_answer_errors_are_terminal_for_the_task_only() -> None:
    """InvalidAnswerError / TaskStatusError: never retried, and say which code to file."""
    for kind, code in [(InvalidAnswerError, "INVALID_ANSWER"), (TaskStatusError, "STATUS_REFUSED")]:
        err = kind("x", task_id=TASK)
        assert isinstance(err, TaskAnswerError)
        assert isinstance(err, TerminalApiError)
        assert not is_retryable(err)
        assert err.fail_code == code
        assert err.exit_code == 2  # the class's default; the engine decides what a task gets


@pytest.mark.parametrize(
    ("content", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [[1], {"b": []}]}', 3),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets in strings do not count
        (b'{"a": "\\"[[[[", "b": [[]]}', 3),  # nor after an escaped quote
        (b"[" * 65 + b"]" * 65, 65),
        (b"[]" * 1000, 1),  # many, but shallow
        (b"[" * 100_000, 100_000),
    ],
    ids=["object", "mixed", "in-string", "escaped-quote", "65", "wide", "deep-unclosed"],
)
def test_json_depth(content: bytes, depth: int) -> None:
    found = json_depth(content)
    if depth <= MAX_JSON_DEPTH:
        assert found <= MAX_JSON_DEPTH  # within the cap the scan may stop at an upper bound
        assert found >= depth
    else:
        assert found == depth


def test_loads_never_raises_recursion_error() -> None:
    with pytest.raises(TooDeepError, match="nested deeper than 64 levels"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    assert loads(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None


@pytest.mark.parametrize(
    ("text", "limit", "line"),
    [
        ("plain", 10, "plain"),
        ("a\nb\tc\rd", 20, "a\\nb\\tc\\rd"),
        ("\x00\x7f\x85", 20, "\\x00\\x7f\\x85"),
        ("bidi\u202eevil", 20, "bidi\\u202eevil"),
        ("tag\U000e0001", 20, "tag\\U000e0001"),
        ("ünïcödé ✓", 20, "ünïcödé ✓"),
        ("x" * 10, 10, "x" * 10),
        ("x" * 11, 10, "x" * 7 + "..."),
        ("\n" * 10, 10, "\\n\\n\\n..."),  # the cut counts escapes, never splits one
        ("\n" * 10, 9, "\\n\\n\\n..."),
    ],
)
def test_one_line(text: str, limit: int, line: str) -> None:
    assert one_line(text, limit) == line
    assert len(one_line(text, limit)) <= limit
