"""Per-key concurrency and request-rate limits, credits."""

from __future__ import annotations

import pytest

from flux_pipeline.simulator import ManualClock, SimConfig
from flux_pipeline.simulator.limits import SlidingWindow, retry_after_seconds

from .helpers import AUTH, STATUS, create, create_id, running_sim, status

pytestmark = pytest.mark.anyio

RATE_LIMITED = {"code": 429, "message": "Rate limit exceeded", "data": None}


async def test_concurrency_limit_gives_429_until_a_task_finishes() -> None:
    clock = ManualClock()
    config = SimConfig(max_concurrent=2, task_seconds=10, task_spread=0)
    async with running_sim(config, clock) as (client, sim):
        await create_id(client)
        clock.advance(1)
        await create_id(client)
        refused = await create(client)
        assert refused.status_code == 429
        assert refused.json() == RATE_LIMITED
        # the first task ends at t=10: one second has passed, so 9 s to wait
        assert refused.headers["Retry-After"] == "9"
        clock.advance(9)
        accepted = await create(client)
        assert accepted.status_code == 200
        stats = sim.snapshot()
    assert stats["max_concurrent_seen"] == 2
    assert stats["rate_limited"] == 1
    assert stats["creates"] == 3


async def test_concurrency_is_per_key() -> None:
    config = SimConfig(api_keys=("a", "b"), max_concurrent=1)
    async with running_sim(config, ManualClock()) as (client, _):
        first = await create(client, headers={"Authorization": "Bearer a"})
        second = await create(client, headers={"Authorization": "Bearer b"})
        third = await create(client, headers={"Authorization": "Bearer a"})
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]


async def test_rpm_counts_both_endpoints_and_sets_retry_after() -> None:
    clock = ManualClock()
    config = SimConfig(rpm=3, rate_window=60)
    async with running_sim(config, clock) as (client, sim):
        task_id = await create_id(client)  # 1 (t=0)
        clock.advance(10)
        await status(client, task_id)  # 2 (t=10)
        clock.advance(10)
        await status(client, task_id)  # 3 (t=20)
        refused = await client.get(STATUS, params={"taskId": task_id}, headers=AUTH)
        assert refused.status_code == 429
        assert refused.json() == RATE_LIMITED
        assert refused.headers["Retry-After"] == "40"  # the t=0 request leaves at t=60
        refused_create = await create(client)
        assert refused_create.status_code == 429
        clock.advance(40)
        assert (await create(client)).status_code == 200
        assert sim.stats.rate_limited == 2


async def test_rejected_requests_do_not_consume_the_window() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(rpm=1, rate_window=5), clock) as (client, _):
        await create_id(client)
        for _ in range(5):
            assert (await create(client)).status_code == 429
        clock.advance(5)
        assert (await create(client)).status_code == 200


async def test_credits_are_spent_per_mode_and_run_out() -> None:
    config = SimConfig(credits=20, cost_pro=5, cost_max=10)
    async with running_sim(config, ManualClock()) as (client, sim):
        assert (await create(client, input={"mode": "max"})).status_code == 200
        assert (await create(client)).status_code == 200
        assert (await create(client)).status_code == 200
        refused = await create(client)
        refused_max = await create(client, input={"mode": "max"})
        stats = sim.snapshot()
    assert refused.status_code == refused_max.status_code == 400
    assert refused.json() == {"code": 400, "message": "Insufficient credits", "data": None}
    assert stats["credits_left"] == 0
    assert stats["creates"] == 3


async def test_unlimited_credits_by_default() -> None:
    async with running_sim(SimConfig(), ManualClock()) as (client, sim):
        for _ in range(3):
            await create_id(client)
        assert sim.snapshot()["credits_left"] is None


def test_sliding_window_and_retry_after_rounding() -> None:
    window = SlidingWindow(2, 1.0)
    assert window.try_acquire(0.0) is None
    assert window.try_acquire(0.5) is None
    assert window.try_acquire(0.75) == pytest.approx(0.25)
    assert window.try_acquire(1.0) is None
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.2) == 2
