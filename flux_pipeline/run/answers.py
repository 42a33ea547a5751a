"""An HTTP answer of the API -> its ``data``, or the typed error it means.

The HTTP status and the body's ``code`` both count (docs/api-contract.md): HTTP 200 with
``"code": 429`` is a 429, and an HTTP error status is the error even when the body is empty
or not JSON. The body is read within the caps of ``run/caps.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from flux_pipeline.errors import (
    ApiError,
    AuthError,
    InsufficientCreditsError,
    InvalidRequestError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
    TaskStatusError,
)
from flux_pipeline.run.api import STATUS_PATH
from flux_pipeline.run.caps import TooDeepError, loads, one_line
from flux_pipeline.run.retry import MAX_RETRY_AFTER, parse_retry_after

MAX_MESSAGE_CHARS = 300  # an error envelope's message, as quoted in our error


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer, its body read and parsed once."""

    status: int
    headers: httpx.Headers
    body: Any  # the parsed JSON; None when empty, unreadable or not JSON
    problem: str = ""  # why the body could not be used ("" when it was JSON or empty)

    @classmethod
    def of(cls, status: int, headers: httpx.Headers, content: bytes | str) -> Answer:
        """``content``: the body, or (a ``str``) why it could not be read."""
        if isinstance(content, str):
            return cls(status, headers, None, content)
        if not content:
            return cls(status, headers, None)
        try:
            return cls(status, headers, loads(content))
        except TooDeepError as exc:
            return cls(status, headers, None, str(exc))
        except ValueError:
            return cls(status, headers, None, "answer is not JSON")

    @property
    def envelope_code(self) -> int | None:
        """The body's ``code`` when the body is the API's own envelope (a JSON object with an
        integer ``code``), else None: a gateway's page, an empty or unreadable body."""
        code = self.body.get("code") if isinstance(self.body, Mapping) else None
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        return code


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        text = body.get("message")
        if isinstance(text, str) and text:
            return one_line(text, MAX_MESSAGE_CHARS)
    return ""


def _error_for(
    code: int, body: Any, *, method: str, path: str, status: int, retry_after: float | None
) -> ApiError:
    """Map an error code (the body's when present, else the HTTP status) to a typed error."""
    message = _message(body)
    ctx: dict[str, Any] = {"method": method, "path": path, "status": status, "code": code}
    polling = path == STATUS_PATH
    if code == 401 or status == 401:
        return AuthError(
            "the API key was rejected (401): check APIXO_API_KEY"
            + (f": {message}" if message else ""),
            **ctx,
        )
    if code == 429 or status == 429:
        return RateLimitedError(message or "rate limit exceeded", retry_after=retry_after, **ctx)
    if code >= 500 or status >= 500:
        return ServerError(message or "server error", **ctx)
    if "insufficient credits" in message.lower():
        return InsufficientCreditsError(message, **ctx)
    if (code == 404 or status == 404) and polling:
        return TaskNotFoundError(message or "task not found", **ctx)
    if 300 <= status < 400:
        if polling:  # not followed; may pass (a moved API is fixed in the configuration)
            return ProtocolError(
                f"status answered a redirect (HTTP {status}), not followed: check APIXO_BASE_URL",
                **ctx,
            )
        return InvalidRequestError("unexpected redirect: check APIXO_BASE_URL", **ctx)
    if polling:
        return TaskStatusError(
            "the status call for this task was refused"
            + (f": {message}" if message else f" with code {code}"),
            **ctx,
        )
    return InvalidRequestError(message or f"request refused with code {code}", **ctx)


def error_of(answer: Answer, *, method: str, path: str) -> ApiError | None:
    """The typed error an answer means, or None when it is a success with readable data
    (docs/api-contract.md, ambiguity 1)."""
    status = answer.status
    body_code = answer.envelope_code
    if not 200 <= status < 300 or (body_code is not None and body_code != 200):
        code = body_code if body_code is not None and body_code != 200 else status
        retry_after = parse_retry_after(answer.headers.get("retry-after"))
        if retry_after is not None:
            retry_after = min(retry_after, MAX_RETRY_AFTER)
        return _error_for(
            code, answer.body, method=method, path=path, status=status, retry_after=retry_after
        )
    ctx: dict[str, Any] = {"method": method, "path": path, "status": status}
    if answer.problem:
        return ProtocolError(answer.problem, **ctx)
    if not isinstance(answer.body, Mapping):
        return ProtocolError("answer is not a JSON object", **ctx)
    if body_code is None:
        return ProtocolError("answer has no numeric code", **ctx)
    return None


def interpret(answer: Answer, *, method: str, path: str) -> Any:
    """The ``data`` of a successful answer, or raises the typed error it means."""
    error = error_of(answer, method=method, path=path)
    if error is not None:
        raise error
    return answer.body.get("data")
