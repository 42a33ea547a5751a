"""The API's wire types: the create body we send and the task status we read back.

Parsing is shared by the poller (status answers) and the callback receiver (callback bodies).
Unknown fields are ignored (docs/api-contract.md, ambiguity 7); a field of the wrong type is a
``ProtocolError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from flux_pipeline.errors import ProtocolError

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
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"field {name!r} should be {kind.__name__}, got {value!r:.80}")
    return value


def _result_urls(raw: Any) -> tuple[str, ...]:
    """``resultJson`` is a JSON *string* holding ``{"resultUrls": [...]}`` (parse it twice)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError(f"resultJson is not JSON: {raw!r:.80}") from exc
    if not isinstance(raw, Mapping):
        raise ProtocolError(f"resultJson should hold an object, got {raw!r:.80}")
    urls = raw.get("resultUrls")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ProtocolError(
            f"resultJson.resultUrls should be a non-empty list of URLs: {urls!r:.80}"
        )
    for url in urls:
        if not url.startswith(("https://", "http://")):
            raise ProtocolError(f"result URL is not http(s): {url!r:.80}")
    return tuple(urls)


def parse_status(data: Any) -> TaskStatus:
    """Parse a status ``data`` object. Raises ``ProtocolError`` for anything unusable."""
    if not isinstance(data, Mapping):
        raise ProtocolError(f"status data should be an object, got {type(data).__name__}")
    task_id = data.get("taskId")
    if not isinstance(task_id, str) or not task_id:
        raise ProtocolError("status data has no taskId")
    raw_state = data.get("state")
    try:
        state = ApiState(str(raw_state))
    except ValueError:
        raise ProtocolError(f"unknown task state {raw_state!r:.40}", task_id=task_id) from None
    urls: tuple[str, ...] = ()
    if state is ApiState.SUCCESS:
        urls = _result_urls(data.get("resultJson"))
    return TaskStatus(
        task_id=task_id,
        state=state,
        result_urls=urls,
        fail_code=_optional(data, "failCode", str),
        fail_msg=_optional(data, "failMsg", str),
        create_time=_optional(data, "createTime", int),
        complete_time=_optional(data, "completeTime", int),
        cost_time=_optional(data, "costTime", int),
    )
