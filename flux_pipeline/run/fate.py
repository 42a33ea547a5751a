"""What one create attempt's outcome means for the task: the single place that decides.

docs/api-contract.md, "What a create's answer means". There is no idempotency key, so a
create is retried only when it surely made no task; when it may have made one, the client
gives up at once (``AmbiguousCreateError``) rather than risk paying twice.

- ``NEVER_SENT``: the request never left this machine (connect error or timeout, DNS
  failure, connection refused, pool timeout, a URL httpx cannot send) -> ``ApiTransportError``
  with ``never_sent=True``, retried; the engine puts the task back to planned.
- ``NOT_CREATED``: the API itself refused it: an answer carrying the API's own envelope (a JSON
  object with an integer ``code``) with an error code, whatever the HTTP status (a 5xx WITH
  the envelope is the API saying it failed: ``ServerError``, retried), or a 3xx/4xx without
  the envelope (a proxy refusing before the API: 401, 429, 400, 404, ...) -> the typed error.
- ``AMBIGUOUS``: it may have made a task: a 5xx WITHOUT the envelope (a gateway's HTML, empty
  or foreign page: a proxy may answer 502/504 after the API created the task, and its page
  looks the same before as after), a 5xx whose envelope says 200, a transport failure once
  the request may have left (read/write timeout, reset, closed connection), a 2xx we cannot
  read (not JSON, no code, too large, too deep, no taskId) -> ``AmbiguousCreateError``.
- ``CREATED``: a 2xx whose envelope says 200 and carries a non-empty string ``taskId``.

The caller's own stop is no fate: a ``before_send`` hook that raises, or a cancellation while
waiting for a token or a connection slot, propagates as it is, and nothing was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import httpx

from flux_pipeline.run.answers import Answer

# transport errors raised before any byte of the request left this machine
NEVER_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,  # DNS failure, connection refused, TLS handshake failure
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


class Fate(StrEnum):
    CREATED = "created"
    NEVER_SENT = "never_sent"
    NOT_CREATED = "not_created"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class CreateFate:
    fate: Fate
    reason: str  # one line: why (the message of the error raised for it)
    task_id: str | None = None  # set when CREATED


def _task_id(answer: Answer) -> str | None:
    body = answer.body
    data = body.get("data") if isinstance(body, Mapping) else None
    task_id = data.get("taskId") if isinstance(data, Mapping) else None
    return task_id if isinstance(task_id, str) and task_id else None


def create_fate(outcome: Answer | httpx.TransportError) -> CreateFate:
    """Decide what a create attempt's outcome (an answer, or the transport error that came
    instead of one) means: see the module docstring."""
    if isinstance(outcome, httpx.TransportError):
        name = type(outcome).__name__
        if isinstance(outcome, NEVER_SENT_ERRORS):
            return CreateFate(Fate.NEVER_SENT, f"could not connect: {name}")
        return CreateFate(Fate.AMBIGUOUS, f"create sent but its answer was lost ({name})")
    status = outcome.status
    code = outcome.envelope_code
    if code is not None and code != 200:
        return CreateFate(Fate.NOT_CREATED, f"the API refused the create (code {code})")
    if 200 <= status < 300:
        if code is None:
            why = outcome.problem or (
                "not the API's envelope" if outcome.body is not None else "empty answer"
            )
            return CreateFate(Fate.AMBIGUOUS, f"create answered something unreadable ({why})")
        task_id = _task_id(outcome)
        if task_id is None:
            return CreateFate(Fate.AMBIGUOUS, "create answered success without a taskId")
        return CreateFate(Fate.CREATED, "created", task_id)
    if status >= 500:  # the HTTP status is added by the error itself
        if code == 200:
            why = "create answered a server error with an envelope saying 200"
        else:
            why = "create answered a server error without the API's envelope (a gateway's page?)"
        return CreateFate(Fate.AMBIGUOUS, f"{why}: the task may exist")
    return CreateFate(Fate.NOT_CREATED, "create refused by the HTTP status")
