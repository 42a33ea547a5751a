"""Task life: durations, states, timestamps, block list, duplicates, scale."""

from __future__ import annotations

import statistics

import pytest

from flux_pipeline.simulator import ManualClock, SimConfig, Simulator
from flux_pipeline.simulator.tasks import TaskStore
from flux_pipeline.simulator.validation import parse_create

from .helpers import create_id, running_sim, status

pytestmark = pytest.mark.anyio


async def test_states_follow_pending_processing_success_with_consistent_times() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(task_seconds=20, task_spread=0), clock) as (client, sim):
        task_id = await create_id(client)
        task = sim.store.tasks[task_id]
        seen = [(await status(client, task_id))["state"]]
        clock.advance(task.started - clock() + 0.001)
        seen.append((await status(client, task_id))["state"])
        clock.advance(task.due - clock() - 0.01)
        seen.append((await status(client, task_id))["state"])
        clock.advance(1)
        final = await status(client, task_id)
        later = await status(client, task_id)
    assert seen == ["pending", "processing", "processing"]
    assert final["state"] == "success"
    assert final["costTime"] == 20_000
    assert final["completeTime"] == final["createTime"] + 20_000
    assert later == final


async def test_counts_by_state_follow_the_clock() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(block_words=("forbidden",)), clock) as (client, sim):
        for i in range(3):
            await create_id(client, f"castle {i}")
        await create_id(client, "a Forbidden castle")
        assert sim.snapshot()["tasks_by_state"] == {
            "pending": 4,
            "processing": 0,
            "success": 0,
            "failed": 0,
        }
        clock.advance(3600)
        assert sim.snapshot()["tasks_by_state"] == {
            "pending": 0,
            "processing": 0,
            "success": 3,
            "failed": 1,
        }


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("a NUDE statue", True),
        ("nude", True),
        ("denuded hills", False),
        ("blood, gore and more", True),
        ("gorey", False),
        ("a quiet lake", False),
    ],
)
async def test_block_list_is_case_insensitive_on_whole_words(prompt: str, blocked: bool) -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(block_words=("nude", "Gore")), clock) as (client, _):
        task_id = await create_id(client, prompt)
        assert (await status(client, task_id))["state"] == "pending"  # fails only at the end
        clock.advance(3600)
        data = await status(client, task_id)
    assert data["state"] == ("failed" if blocked else "success")
    if blocked:
        assert data["failCode"] == "CONTENT_VIOLATION"


async def test_duplicate_creates_are_counted_on_canonical_input() -> None:
    async with running_sim(SimConfig(), ManualClock()) as (client, sim):
        await create_id(client, "a", input={"mode": "pro", "aspect_ratio": "1:1"})
        await create_id(client, "a", input={"aspect_ratio": "1:1", "mode": "pro"})
        await create_id(
            client, "a", provider="official", input={"mode": "pro", "aspect_ratio": "1:1"}
        )
        await create_id(client, "b")
        stats = sim.snapshot()
    assert stats["creates"] == 4
    assert stats["distinct_inputs"] == 2
    assert stats["duplicate_creates"] == 2


def test_durations_follow_the_configured_law() -> None:
    store = TaskStore(task_seconds=30, spread=7.5, time_scale=1.0, seed=1)
    totals = [store.draw_durations()[1] for _ in range(5000)]
    assert 29 < statistics.mean(totals) < 31
    assert 6.5 < statistics.stdev(totals) < 8.5
    assert min(totals) >= 1.0
    scaled = TaskStore(task_seconds=30, spread=7.5, time_scale=0.05, seed=1)
    pending, total = scaled.draw_durations()
    assert 0 < pending < total <= (30 + 4 * 7.5) * 0.05


def test_same_seed_same_ids_and_durations() -> None:
    def run() -> list[tuple[str, float]]:
        sim = Simulator(SimConfig(seed=7), ManualClock())
        request = parse_create({"input": {"prompt": "x"}})
        ids = [sim.create("sim-key", request, "http://s") for _ in range(5)]
        return [(i, sim.store.tasks[i].due) for i in ids]

    assert run() == run()


def test_a_hundred_thousand_tasks_stay_cheap() -> None:
    """100,000 tasks through the task table (its time is a figure of
    tests/benchmarks/bench_simulator.py, not an assertion here)."""
    clock = ManualClock()
    sim = Simulator(SimConfig(max_concurrent=200_000), clock)
    request = parse_create({"input": {"prompt": "a castle"}})
    ids = []
    for _ in range(100_000):
        sim.settle()  # what every request does first
        ids.append(sim.create("sim-key", request, "http://s"))
        clock.advance(0.0003)  # 30 s of creations
    midway = sim.snapshot()["tasks_by_state"]
    clock.advance(3600)
    sim.settle()
    stats = sim.snapshot()
    assert stats["tasks_by_state"]["success"] == 100_000
    assert stats["duplicate_creates"] == 99_999
    assert midway["success"] > 0
    assert midway["pending"] + midway["processing"] > 0
    assert stats["max_concurrent_seen"] < 100_000
    assert sim.status("sim-key", ids[-1])["state"] == "success"
