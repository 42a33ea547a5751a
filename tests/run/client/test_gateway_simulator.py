"""A gateway's 5xx page on a create is ambiguous, never retried: against the real simulator.

The simulator's ``gateway_after_rate`` answers an HTML 502/504 page AFTER the create made its
task (what a proxy timing out looks like); ``gateway_rate`` the same page BEFORE the request
reached the API. The client cannot tell the two apart, so both are ambiguous
(docs/api-contract.md, "What a create's answer means"). A 5xx WITH the API's envelope is the
API itself saying it failed: retried, and it makes exactly one task.
"""

from __future__ import annotations

from functools import partial

import pytest

from flux_pipeline.errors import AmbiguousCreateError
from flux_pipeline.run.api import build_create_body

from .support import FakeSleep
from .test_client_simulator import (
    PROMPT,
    ClockSleep,
    OverHttp,
    over_http,  # noqa: F401 (the fixture)
)

pytestmark = pytest.mark.anyio


async def test_gateway_page_after_the_create_is_ambiguous_after_one_request(
    over_http: OverHttp,  # noqa: F811
) -> None:
    await over_http.set_faults(gateway_after_rate=1.0)
    sleep = FakeSleep()
    hooks: list[int] = []

    async def before_send() -> None:
        hooks.append(1)

    async with over_http.client(sleep=sleep) as client:
        with pytest.raises(AmbiguousCreateError) as info:
            await client.create_task(build_create_body(PROMPT), before_send=before_send)
    stats = await over_http.stats()
    assert info.value.status in (502, 504)
    assert "without the API's envelope" in str(info.value)
    assert stats["requests_by_endpoint"] == {"create": 1}  # exactly one create reached it
    assert stats["creates"] == 1  # ... and it made (and billed) a task: retrying pays twice
    assert stats["gateway_errors"] == 1
    assert sleep.delays == []
    assert hooks == [1]


async def test_gateway_page_before_the_create_is_also_ambiguous(
    over_http: OverHttp,  # noqa: F811
) -> None:
    """The same page, sent before the API saw the request: no task, but nothing tells us."""
    await over_http.set_faults(gateway_rate=1.0)
    async with over_http.client() as client:
        with pytest.raises(AmbiguousCreateError):
            await client.create_task(build_create_body(PROMPT))
    stats = await over_http.stats()
    assert stats["requests_by_endpoint"] == {"create": 1}
    assert stats["creates"] == 0


async def test_server_error_with_envelope_is_retried_and_succeeds(
    over_http: OverHttp,  # noqa: F811
) -> None:
    await over_http.set_faults(error_rate=1.0)  # 500/502/503 with the API's envelope
    heal = partial(over_http.set_faults, error_rate=0.0)
    sleep = ClockSleep(over_http.advance, heal_after=2, heal=heal)
    async with over_http.client(sleep=sleep) as client:
        task_id = await client.create_task(build_create_body(PROMPT))
    stats = await over_http.stats()
    assert task_id.startswith("task_")
    assert len(sleep.delays) == 2
    assert stats["requests_by_endpoint"] == {"create": 3}
    assert stats["server_errors"] == 2
    assert stats["creates"] == 1


async def test_status_retried_through_gateway_pages(over_http: OverHttp) -> None:  # noqa: F811
    """A status call is safe to repeat: a gateway's page is retried like any 5xx."""
    async with over_http.client() as client:
        task_id = await client.create_task(build_create_body(PROMPT))
    await over_http.set_faults(gateway_rate=1.0)
    heal = partial(over_http.set_faults, gateway_rate=0.0)
    sleep = ClockSleep(over_http.advance, heal_after=2, heal=heal)
    async with over_http.client(sleep=sleep) as client:
        status = await client.get_status(task_id)
    stats = await over_http.stats()
    assert status.task_id == task_id
    assert stats["requests_by_endpoint"] == {"create": 1, "status": 3}
    assert stats["gateway_errors"] == 2
