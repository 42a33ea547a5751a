"""Connections for creates (docs/api-contract.md, "What a create's answer means"): a create
waits at least ``CREATE_READ_TIMEOUT`` for its answer, and idle pooled connections expire
before common server idle timeouts so a create is rarely sent on one being closed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from flux_pipeline.run.api import build_create_body
from flux_pipeline.run.client import (
    CREATE_READ_TIMEOUT,
    KEEPALIVE_EXPIRY,
    ClientConfig,
    FluxClient,
)

from .support import API_KEY, BASE_URL, envelope, status_data

pytestmark = pytest.mark.anyio

BODY = build_create_body({"input": {"prompt": "x"}})


async def timeouts_seen(config: ClientConfig) -> dict[str, dict[str, Any]]:
    """The timeout httpx applied to one create and one status request."""
    seen: dict[str, dict[str, Any]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.method] = dict(request.extensions["timeout"])
        if request.method == "POST":
            return httpx.Response(200, json=envelope({"taskId": "task_1"}))
        return httpx.Response(200, json=envelope(status_data("task_1")))

    async with FluxClient(
        api_key=API_KEY, config=config, transport=httpx.MockTransport(handler)
    ) as client:
        await client.create_task(BODY)
        await client.get_status("task_1")
    return seen


async def test_create_read_timeout_is_raised_to_the_floor() -> None:
    config = ClientConfig(
        base_url=BASE_URL, timeout=httpx.Timeout(connect=3.0, read=5.0, write=7.0, pool=9.0)
    )
    seen = await timeouts_seen(config)
    assert CREATE_READ_TIMEOUT >= 60.0
    assert seen["POST"] == {"connect": 3.0, "read": CREATE_READ_TIMEOUT, "write": 7.0, "pool": 9.0}
    assert seen["GET"] == {"connect": 3.0, "read": 5.0, "write": 7.0, "pool": 9.0}


async def test_create_read_timeout_is_never_lowered() -> None:
    longer = ClientConfig(base_url=BASE_URL, timeout=httpx.Timeout(10.0, read=120.0))
    assert (await timeouts_seen(longer))["POST"]["read"] == 120.0
    unbounded = ClientConfig(base_url=BASE_URL, timeout=httpx.Timeout(10.0, read=None))
    assert (await timeouts_seen(unbounded))["POST"]["read"] is None


async def test_default_timeouts() -> None:
    seen = await timeouts_seen(ClientConfig(base_url=BASE_URL))
    assert seen["POST"]["read"] == CREATE_READ_TIMEOUT
    assert seen["GET"]["read"] == 30.0


async def test_idle_connections_expire_before_common_server_idle_timeouts() -> None:
    assert 0 < KEEPALIVE_EXPIRY < 5.0  # uvicorn, Node.js, Apache: 5 s
    async with FluxClient(api_key=API_KEY, config=ClientConfig(max_connections=7)) as client:
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY
        assert pool._max_connections == 7  # the pool is as large as the client's limiter
        assert client._limiter.total_tokens == 7
