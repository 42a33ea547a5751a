"""An HTTP answer of the API -> its ``data``, or the typed error it means.

The HTTP status and the body's ``code`` both count (docs/api-contract.md): HTTP 200 with
``"code": 429`` is a 429, and an HTTP error status is the error even when the body is empty
or not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
)
from flux_pipeline.run.api import STATUS_PATH
from flux_pipeline.run.retry import MAX_RETRY_AFTER, parse_retry_after


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        text = body.get("message")
        if isinstance(text, str) and text:
            return text[:300]
    return ""


def _error_for(
    code: int, body: Any, *, method: str, path: str, status: int, retry_after: float | None
) -> ApiError:
    """Map an error code (the body's when present, else the HTTP status) to a typed error."""
    message = _message(body)
    ctx: dict[str, Any] = {"method": method, "path": path, "status": status, "code": code}
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
    if (code == 404 or status == 404) and path == STATUS_PATH:
        return TaskNotFoundError(message or "task not found", **ctx)
    if 300 <= status < 400:
        return InvalidRequestError("unexpected redirect: check APIXO_BASE_URL", **ctx)
    return InvalidRequestError(message or f"request refused with code {code}", **ctx)


def interpret(
    status: int, headers: httpx.Headers, content: bytes, *, method: str, path: str
) -> Any:
    """The ``data`` of a successful answer, or the typed error. Honours both the HTTP status
    and the body's ``code`` (docs/api-contract.md, ambiguity 1): HTTP 200 with ``"code": 429``
    is a 429, and an HTTP error status is the error even when the body is empty or not JSON."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is not None:
        retry_after = min(retry_after, MAX_RETRY_AFTER)
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = None
    body_code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(body_code, bool) or not isinstance(body_code, int):
        body_code = None
    if not 200 <= status < 300 or (body_code is not None and body_code != 200):
        code = body_code if body_code is not None and body_code != 200 else status
        raise _error_for(
            code, body, method=method, path=path, status=status, retry_after=retry_after
        )
    if not isinstance(body, Mapping):
        raise ProtocolError("answer is not a JSON object", method=method, path=path, status=status)
    if body_code is None:
        raise ProtocolError("answer has no numeric code", method=method, path=path, status=status)
    return body.get("data")
