from __future__ import annotations

import pytest

from flux_pipeline.run.budget import SAFETY, TokenBucket
from flux_pipeline.run.scheduler import DueHeap, Durations, PollTiming, TimingConfig

pytestmark = pytest.mark.anyio


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_bucket_spends_at_the_configured_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(600, burst_seconds=0.5, clock=t, sleep=t.sleep)  # 10/s nominal
    start = t.now
    for _ in range(105):
        await bucket.acquire()
    elapsed = t.now - start
    rate = 10 * SAFETY
    # the burst (5 tokens) is free, the other 100 are paced
    assert elapsed == pytest.approx((105 - bucket.capacity) / rate, rel=0.02)


async def test_429_pauses_and_shrinks_then_recovers() -> None:
    t = FakeTime()
    bucket = TokenBucket(600, clock=t, sleep=t.sleep, recovery=30)
    bucket.rate_limited(4.0)
    assert bucket.factor == pytest.approx(0.7)
    before = t.now
    await bucket.acquire()
    assert t.now - before >= 4.0  # waited out Retry-After
    t.now += 30
    assert bucket.factor == pytest.approx(1.0)
    assert bucket.rate_limits == 1


async def test_due_heap_orders_and_supersedes() -> None:
    t = FakeTime()
    heap = DueHeap(clock=t)
    heap.schedule("a", t.now - 1)
    heap.schedule("b", t.now - 2)
    heap.schedule("a", t.now - 3)  # supersedes a's first entry
    assert await heap.next_due() == "a"
    assert await heap.next_due() == "b"
    assert len(heap) == 0
    heap.schedule("c", t.now - 1)
    heap.discard("c")
    assert "c" not in heap


def test_durations_quantiles_slide() -> None:
    d = Durations(size=4)
    for v in (10, 20, 30, 40, 50):
        d.add(v)
    assert len(d) == 4
    assert d.quantile(0.0) == 20
    assert d.quantile(0.99) == 50


def test_timing_unlearned_shares_the_budget_then_learned_polls_where_completions_are_likely() -> (
    None
):
    timing = PollTiming(TimingConfig(first_poll=2.0, max_interval=10, learn_after=4))
    assert timing.next_delay(age=0, polls=0, waiting=1, poll_rate=10, callback=False) == 2.0
    # unlearned: 50 waiting tasks share 10 polls/s -> each every 5 s (capped at max_interval)
    assert timing.next_delay(age=2, polls=1, waiting=50, poll_rate=10, callback=False) == 5.0
    assert timing.next_delay(age=2, polls=1, waiting=500, poll_rate=10, callback=False) == 10
    for v in range(20, 40):  # durations 20..39 s, uniform
        timing.observe(v)
    timing.hit_rate = 0.25
    # first poll where a quarter of tasks are done; then where a quarter of the rest are
    assert timing.next_delay(age=0, polls=0, waiting=1, poll_rate=10, callback=False) == 25
    assert timing.next_delay(age=25, polls=1, waiting=1, poll_rate=10, callback=False) == 4
    # older than every task seen: fall back to sharing the budget
    assert timing.next_delay(age=60, polls=9, waiting=20, poll_rate=10, callback=False) == 2.0
    # callback mode: the first poll is a sweep well after tasks are usually done
    assert timing.next_delay(age=0, polls=0, waiting=1, poll_rate=10, callback=True) > 39


def test_steering_polls_sooner_when_under_budget_and_later_when_over() -> None:
    timing = PollTiming(TimingConfig(initial_hit_rate=0.3))
    timing.steer(spent=50, budget=100)
    assert timing.hit_rate < 0.3
    low = timing.hit_rate
    timing.steer(spent=200, budget=100)
    assert timing.hit_rate > low
    for _ in range(100):
        timing.steer(spent=1000, budget=100)
    assert timing.hit_rate == 0.9  # bounded


async def test_urgent_waiters_are_served_before_queued_status_calls() -> None:
    """A create (urgent) arriving behind many waiting status calls gets the next token."""
    import anyio.lowlevel

    bucket = TokenBucket(600, burst_seconds=0.1)  # 10/s, 1 token of burst: real clock, short
    await bucket.acquire()  # empty the bucket
    order: list[str] = []

    async def take(name: str, urgent: bool) -> None:
        await bucket.acquire(urgent=urgent)
        order.append(name)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(take, f"status{i}", False)
        for _ in range(10):  # let them queue: status0 sleeping for a token, the rest on the lock
            await anyio.lowlevel.checkpoint()
        assert order == []
        tg.start_soon(take, "create", True)
    assert order[0] == "create"
    assert sorted(order[1:]) == ["status0", "status1", "status2"]
