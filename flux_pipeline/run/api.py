"""The API's wire types: the create body we send and the task status we read back.

Parsing is shared by the poller (status answers) and the callback receiver (callback bodies).
Unknown fields are ignored (docs/api-contract.md, ambiguity 7); a field of the wrong type is a
``ProtocolError``. The caps of ``run/caps.py`` apply (docs/api-contract.md, "Caps on answers"):
a result URL list or URL that breaks one is an ``InvalidAnswerError`` for that task; a time
out of range is unknown (None); failCode/failMsg are kept as one capped line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import httpx

from flux_pipeline.errors import InvalidAnswerError, ProtocolError
from flux_pipeline.run.caps import (
    MAX_FAIL_CODE_CHARS,
    MAX_RESULT_URLS,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    TooDeepError,
    bounded_int,
    loads,
    one_line,
)

CREATE_PATH = "/api/v1/generateTask/flux-kontext"
STATUS_PATH = "/api/v1/statusTask/flux-kontext"
DEFAULT_BASE_URL = "https://api.apixo.ai"

RequestType = Literal["async", "callback"]


class ApiState(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (ApiState.SUCCESS, ApiState.FAILED)


_STATES = frozenset(state.value for state in ApiState)
MAX_TASK_ID_CHARS = 200  # a taskId as quoted in errors (the client compares it exactly)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStatus:
    """A task as the status endpoint (or a callback) describes it."""

    task_id: str
    state: ApiState
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None
    fail_msg: str | None = None
    create_time: int | None = None  # Unix ms
    complete_time: int | None = None  # Unix ms
    cost_time: int | None = None  # ms


def build_create_body(
    request: Mapping[str, Any],
    *,
    request_type: RequestType = "async",
    callback_url: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a create call: the planned request plus how we want to hear back."""
    body: dict[str, Any] = {"request_type": request_type}
    if request_type == "callback":
        if not callback_url:
            raise ValueError("callback mode needs a callback_url")
        body["callback_url"] = callback_url
    body.update((k, v) for k, v in request.items() if k not in _RUN_FIELDS)
    return body


_RUN_FIELDS = ("request_type", "callback_url")  # the run decides these, never the request


def _optional(data: Mapping[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        shown = one_line(repr(value), 80)
        raise ProtocolError(f"field {name!r} should be {kind.__name__}, got {shown}")
    return value


def _text(data: Mapping[str, Any], name: str, limit: int) -> str | None:
    """failCode/failMsg: a string, kept as one line of at most ``limit`` characters."""
    value = _optional(data, name, str)
    return None if value is None else one_line(value, limit)


def _result_url(url: Any, task_id: str) -> str:
    """An absolute http(s) URL that httpx can fetch, or ``InvalidAnswerError`` for the task."""
    shown = one_line(url if isinstance(url, str) else repr(url), 80)
    if not isinstance(url, str):
        raise ProtocolError(f"result URL should be a string, got {shown}")
    if len(url) > MAX_URL_CHARS:
        raise InvalidAnswerError(
            f"result URL longer than {MAX_URL_CHARS} characters: {shown}", task_id=task_id
        )
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidAnswerError(
            f"result URL is not an absolute http(s) URL: {shown}", task_id=task_id
        )
    return url


def _result_urls(raw: Any, task_id: str) -> tuple[str, ...]:
    """``resultJson`` is a JSON *string* holding ``{"resultUrls": [...]}`` (parse it twice)."""
    if isinstance(raw, str):
        try:
            raw = loads(raw, "resultJson")
        except TooDeepError as exc:
            raise ProtocolError(str(exc)) from None
        except ValueError as exc:
            raise ProtocolError(f"resultJson is not JSON: {one_line(raw, 80)}") from exc
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"resultJson should hold an object, got {type(raw).__name__}")
    urls = raw.get("resultUrls")
    if not isinstance(urls, list) or not urls:
        raise ProtocolError("resultJson.resultUrls should be a non-empty list of URLs")
    if len(urls) > MAX_RESULT_URLS:
        raise InvalidAnswerError(
            f"{len(urls)} result URLs, more than {MAX_RESULT_URLS}", task_id=task_id
        )
    return tuple(_result_url(url, task_id) for url in urls)


def parse_status(data: Any) -> TaskStatus:
    """Parse a status ``data`` object. Raises ``ProtocolError`` for anything unusable."""
    if not isinstance(data, Mapping):
        raise ProtocolError(f"status data should be an object, got {type(data).__name__}")
    task_id = data.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise ProtocolError("status data has no taskId")
    shown_id = one_line(task_id, MAX_TASK_ID_CHARS)  # what errors quote
    raw_state = data.get("state")
    if not isinstance(raw_state, str) or raw_state not in _STATES:
        shown = one_line(raw_state if isinstance(raw_state, str) else repr(raw_state), 40)
        raise ProtocolError(f"unknown task state {shown}", task_id=shown_id)
    state = ApiState(raw_state)
    urls: tuple[str, ...] = ()
    if state is ApiState.SUCCESS:
        urls = _result_urls(data.get("resultJson"), shown_id)
    return TaskStatus(
        task_id=task_id,
        state=state,
        result_urls=urls,
        fail_code=_text(data, "failCode", MAX_FAIL_CODE_CHARS),
        fail_msg=_text(data, "failMsg", MAX_TEXT_CHARS),
        create_time=bounded_int(data.get("createTime")),
        complete_time=bounded_int(data.get("completeTime")),
        cost_time=bounded_int(data.get("costTime")),
    )
