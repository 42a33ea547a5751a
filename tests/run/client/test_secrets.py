"""The API key never shows up in an error's message or repr, nor in the client's repr.

Every row of the error-mapping table is replayed (plus the retried paths, whose errors are
re-raised after several attempts); the key is a distinctive string searched for verbatim.
"""

from __future__ import annotations

import traceback

import httpx
import pytest

from flux_pipeline.errors import ApiError, AuthError
from flux_pipeline.run.api import build_create_body
from flux_pipeline.run.client import ClientConfig, FluxClient

from .support import (
    API_KEY,
    FakeSleep,
    Handler,
    Script,
    envelope,
    make_client,
    raises,
    respond,
    status_data,
)
from .test_error_mapping import ROWS, Row, _run

ERROR_ROWS = [row for row in ROWS if row.expect is not None and not row.marks]


def assert_no_key(exc: BaseException) -> None:
    assert API_KEY not in str(exc)
    assert API_KEY not in repr(exc)
    assert API_KEY not in repr(vars(exc))
    # nor anywhere in the printed chain (httpx causes carry the request, headers included)
    assert API_KEY not in "".join(traceback.format_exception(exc))


def test_error_rows_cover_every_api_error_kind() -> None:
    kinds = {row.expect for row in ERROR_ROWS}
    assert len(kinds) >= 9


@pytest.mark.anyio
@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ERROR_ROWS])
async def test_key_not_in_error(row: Row) -> None:
    with pytest.raises(ApiError) as info:
        await _run(row, FakeSleep())
    assert_no_key(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [respond(429), respond(503), raises(httpx.ReadTimeout), raises(httpx.ConnectError)],
    ids=["429", "503", "read-timeout", "connect-error"],
)
async def test_key_not_in_error_after_retries(answer: Handler) -> None:
    async with make_client(answer, attempts=3, rate_limit_attempts=3) as client:
        assert API_KEY not in repr(client)
        with pytest.raises(ApiError) as info:
            await client.get_status("task_1")
        with pytest.raises(ApiError) as info_create:
            await client.create_task(build_create_body({"input": {"prompt": "x"}}))
    assert_no_key(info.value)
    assert_no_key(info_create.value)


def test_key_not_in_client_repr() -> None:
    client = make_client(Script())
    assert API_KEY not in repr(client)
    assert API_KEY not in repr(client.config)
    assert API_KEY not in str(client)


async def _one_call(client: FluxClient, call: str) -> object:
    if call == "status":
        return await client.get_status("task_1")
    return await client.create_task(build_create_body({"input": {"prompt": "x"}}))


ECHO = f"invalid token Bearer {API_KEY} for this account"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("call", "answer"),
    [
        ("status", respond(401, {"code": 401, "message": ECHO})),
        ("create", respond(200, {"code": 400, "message": ECHO, "data": None})),
        ("status", respond(429, {"code": 429, "message": ECHO})),
        ("create", respond(503, {"code": 503, "message": ECHO})),
        ("status", respond(200, envelope(status_data(state=API_KEY)))),
        ("status", respond(200, envelope(status_data(state="success", resultJson=API_KEY)))),
    ],
    ids=["401", "400", "429", "503", "state", "result-json"],
)
async def test_key_echoed_by_server_is_not_repeated(call: str, answer: Handler) -> None:
    """A gateway that echoes the credential must not make the CLI print it (docs/secrets.md)."""
    async with make_client(answer, attempts=2, rate_limit_attempts=2) as client:
        with pytest.raises(ApiError) as info:
            await _one_call(client, call)
    assert_no_key(info.value)


@pytest.mark.anyio
async def test_echoed_key_is_redacted_not_the_whole_message() -> None:
    async with make_client(respond(401, {"code": 401, "message": ECHO})) as client:
        with pytest.raises(AuthError) as info:
            await client.get_status("task_1")
    assert "invalid token Bearer" in str(info.value)
    assert "for this account" in str(info.value)


def key_fragments(text: str, size: int = 12) -> list[str]:
    """Every ``size``-character piece of the key found in ``text``."""
    pieces = {API_KEY[i : i + size] for i in range(len(API_KEY) - size + 1)}
    return sorted(piece for piece in pieces if piece in text)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        respond(401, {"code": 401, "message": "x" * 285 + API_KEY}),
        respond(200, envelope(status_data(state="z" * 20 + API_KEY))),
    ],
    ids=["message-cut-at-300", "state-cut-at-40"],
)
async def test_key_echoed_across_a_cut_leaves_no_fragment(answer: Handler) -> None:
    async with make_client(answer, attempts=1) as client:
        with pytest.raises(ApiError) as info:
            await client.get_status("task_1")
    assert key_fragments(str(info.value)) == []
    assert key_fragments(repr(info.value)) == []


@pytest.mark.anyio
async def test_a_very_short_key_does_not_corrupt_answers() -> None:
    """Redaction is byte replacement: a one-letter key must not mangle every answer."""
    script = Script(respond(200, envelope({"taskId": "task_1"})))
    async with FluxClient(
        api_key="k", transport=httpx.MockTransport(script), config=ClientConfig(base_url="http://t")
    ) as client:
        assert await client.create_task({"input": {"prompt": "p"}}) == "task_1"
