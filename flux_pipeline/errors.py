"""Every error flux-pipeline raises on purpose, in one tree.

The CLI has one error boundary (``flux_pipeline.cli``): it prints ``str(error)`` as one line
and exits with ``error.exit_code``. Third-party exceptions (httpx, sqlite, yaml) are translated
into this tree in exactly one place each: the API client, the state store, the manifest loader.
Retry policy is a question about the class: ``isinstance(err, RetryableError)``.

    FluxPipelineError                      exit 2 unless noted
    ├── UsageError                         bad CLI flags or configuration (missing API key, ...)
    │   └── OutputsNotWritableError        output or state directory unwritable, or disk full
    ├── ManifestError                      manifest invalid; carries every located Diagnostic
    ├── StateError                         state DB unusable (newer schema, corrupt, locked)
    │   └── LeaseHeldError                 another run holds the state DB or output directory
    ├── ApiError                           the API answered something we cannot use
    │   ├── TerminalApiError               never retried
    │   │   ├── AuthError                  401: key invalid or missing; aborts the run
    │   │   ├── InsufficientCreditsError   "Insufficient credits": stops submitting (exit 3)
    │   │   ├── InvalidRequestError        400 (other): this task fails terminally
    │   │   ├── TaskNotFoundError          status of a taskId the API does not know
    │   │   ├── TaskAnswerError            a status answer unusable for THAT task (not the run)
    │   │   │   ├── InvalidAnswerError     its content breaks a cap (result URLs): INVALID_ANSWER
    │   │   │   └── TaskStatusError        status call refused with a 4xx: STATUS_REFUSED
    │   │   └── AmbiguousCreateError       create sent, answer lost: may have been billed
    │   └── RetryableError                 transient: wait and try again
    │       ├── RateLimitedError           429 (HTTP status or body code); has retry_after
    │       ├── ServerError                5xx (HTTP status or body code)
    │       ├── ApiTransportError          network failure; .never_sent tells if the request left
    │       └── ProtocolError              an answer we could not parse (bad JSON, unknown state)
    └── DownloadError                      a result could not be fetched
        ├── ResultExpiredError             the result URL is gone (403/404/410): terminal
        └── InvalidResultError             the bytes are not the image they claim to be

``DownloadError`` itself is retryable (network trouble); its two subclasses are terminal.
No message in this tree ever contains the API key: the client builds messages from the method,
path, status and body only, never from headers.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """What the CLI exits with (``docs/exit-codes.md``); ``flux_pipeline/outcome.py`` decides
    which one a run's buckets give."""

    OK = 0  # every task done, its files on disk
    TASKS_FAILED = 1  # finished, but some tasks have no images
    INVALID = 2  # usage, manifest, configuration, API key, state DB: nothing billed after it
    RESUMABLE = 3  # stopped early: the same command again makes progress
    INTERNAL = 70  # a bug: the message asks for a report


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``: the one typo hint."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class FluxPipelineError(Exception):
    """Base of every deliberate error. ``exit_code`` is what the CLI exits with."""

    exit_code: int = ExitCode.INVALID


class UsageError(FluxPipelineError):
    """Raised for invalid CLI flags or configuration (e.g. ``APIXO_API_KEY`` unset)."""


@dataclass(frozen=True, kw_only=True)
class Diagnostic:
    """One located problem in a manifest (or a file it references)."""

    file: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{self.file}: {self.message}"


class ManifestError(FluxPipelineError):
    """Raised when a manifest is invalid. Holds every diagnostic found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class OutputsNotWritableError(UsageError):
    """Raised before anything is sent when the output directory or the state DB's directory
    cannot be created or written, or its file system has too little free space."""


class StateError(FluxPipelineError):
    """Raised when the state DB cannot be used (schema from a newer version, corrupt file)."""


class LeaseHeldError(StateError):
    """Raised when another run holds the lease on the state DB or the output directory.

    ``holder`` is what that run wrote into the lock file (pid, host, command, since), empty
    when it could not be read.
    """

    def __init__(self, message: str, *, path: str, holder: dict[str, str]) -> None:
        self.path = path
        self.holder = holder
        super().__init__(message)


class ApiError(FluxPipelineError):
    """Raised by the API client. Carries the request and what the API answered."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status: int | None = None,
        code: int | None = None,
        task_id: str | None = None,
    ) -> None:
        self.message = message
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.task_id = task_id
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        parts = [self.message]
        if self.task_id:
            parts.append(f"taskId={self.task_id}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None and self.code != self.status:
            parts.append(f"code {self.code}")
        detail = ", ".join(parts[1:])
        text = f"{where}: {parts[0]}" if where else parts[0]
        return f"{text} ({detail})" if detail else text


class TerminalApiError(ApiError):
    """An API error that retrying cannot fix."""


class AuthError(TerminalApiError):
    """Raised on 401: the API key is invalid or missing. The run stops at once."""


class InsufficientCreditsError(TerminalApiError):
    """Raised when a create is refused for lack of credits. New submissions stop; resumable."""

    exit_code = ExitCode.RESUMABLE


class InvalidRequestError(TerminalApiError):
    """Raised on 400 (other than credits): the request itself is wrong; the task fails."""


class TaskNotFoundError(TerminalApiError):
    """Raised when the status endpoint does not know the taskId."""


class TaskAnswerError(TerminalApiError):
    """The status answer about one task cannot be used: that task fails (or is held) with
    ``fail_code`` and the message as its reason; the run goes on. ``task_id`` is always set."""

    fail_code = "INVALID_ANSWER"


class InvalidAnswerError(TaskAnswerError):
    """Raised when a status answer breaks a cap for its task (docs/api-contract.md, "Caps on
    answers"): too many result URLs, or a result URL that is not an absolute http(s) URL."""

    fail_code = "INVALID_ANSWER"


class TaskStatusError(TaskAnswerError):
    """Raised when a status call is refused with a 4xx other than 401/404/429 (or such a body
    code): it concerns that task only, never the run."""

    fail_code = "STATUS_REFUSED"


class AmbiguousCreateError(TerminalApiError):
    """Raised when a create request was sent but its answer was lost.

    The task may or may not exist (and be billed); retrying could pay twice, so it is not
    retried. The engine records the task as ambiguous. Also raised for a 5xx answer without
    the API's own envelope (a gateway's page): ``run/fate.py`` decides (docs/api-contract.md).
    """


class RetryableError(ApiError):
    """A transient API error: waiting and trying again may succeed."""


class RateLimitedError(RetryableError):
    """Raised on 429 (HTTP status or body code). ``retry_after`` is seconds, when the API said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(RetryableError):
    """Raised on a 5xx answer (HTTP status or body code)."""


class ApiTransportError(RetryableError):
    """Raised on a network failure. ``never_sent`` is True only when the request provably never
    left this machine (connect error, pool timeout), which makes even a create safe to retry."""

    def __init__(self, message: str, *, never_sent: bool, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.never_sent = never_sent


class ProtocolError(RetryableError):
    """Raised when an answer cannot be understood: not JSON, wrong shape, unknown task state."""


class DownloadError(FluxPipelineError):
    """Raised when a result image could not be downloaded (transient: retried)."""

    def __init__(self, message: str, *, url: str = "", task_id: str | None = None) -> None:
        self.url = url
        self.task_id = task_id
        super().__init__(message)


class ResultExpiredError(DownloadError):
    """Raised when a result URL answers 403/404/410: the result has expired. Terminal."""


class InvalidResultError(DownloadError):
    """Raised when downloaded bytes are not a JPEG/PNG/WebP image. Terminal for that URL."""


def is_retryable(error: BaseException) -> bool:
    """The single retry question: transient API errors and plain download failures."""
    if isinstance(error, RetryableError):
        return True
    return isinstance(error, DownloadError) and not isinstance(
        error, ResultExpiredError | InvalidResultError
    )
