"""The /_sim/* endpoints and the real-clock background loop."""

from __future__ import annotations

import httpx
import pytest

from flux_pipeline.simulator import ManualClock, SimConfig, SimulatorThread

from .helpers import AUTH, CREATE, create_id, receiver, running_sim, wait_until

pytestmark = pytest.mark.anyio


async def test_task_debug_view_shows_the_request_received() -> None:
    async with running_sim(SimConfig(), ManualClock()) as (client, _):
        task_id = await create_id(client, "a castle", provider="value", input={"mode": "max"})
        view = (await client.get(f"/_sim/tasks/{task_id}")).json()
        missing = await client.get("/_sim/tasks/task_nope")
    assert view["taskId"] == task_id
    assert view["state"] == "pending"
    assert view["request"] == {"input": {"prompt": "a castle", "mode": "max"}, "provider": "value"}
    assert view["status"]["taskId"] == task_id
    assert missing.status_code == 404


async def test_task_list_names_every_task_created_in_order_with_its_prompt() -> None:
    async with running_sim(SimConfig(), ManualClock()) as (client, _):
        assert (await client.get("/_sim/tasks")).json() == {"tasks": []}
        first = await create_id(client, "a castle")
        second = await create_id(client, "a moat", input={"mode": "max"})
        answer = await client.get("/_sim/tasks")
    assert answer.status_code == 200
    tasks = answer.json()["tasks"]
    assert [(t["taskId"], t["prompt"]) for t in tasks] == [(first, "a castle"), (second, "a moat")]
    assert tasks[1]["request"] == {"input": {"prompt": "a moat", "mode": "max"}}
    assert all(isinstance(t["created"], float | int) for t in tasks)


async def test_clock_endpoint_advances_a_manual_clock_only() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(), clock) as (client, sim):
        await create_id(client)
        answer = await client.post("/_sim/clock", json={"advance": 3600})
        assert answer.json() == {"now": clock()}
        assert sim.store.counts["success"] == 1
        assert (await client.post("/_sim/clock", json={"advance": -1})).status_code == 400
    async with running_sim() as (client, _):
        assert (await client.post("/_sim/clock", json={"advance": 1})).status_code == 409


def test_real_clock_completions_drive_callbacks_without_polling() -> None:
    config = SimConfig(task_seconds=0.05, task_spread=0)
    with receiver() as rec, SimulatorThread(config) as sim:
        body = {
            "request_type": "callback",
            "callback_url": f"{rec.base_url}/callback",
            "input": {"prompt": "x"},
        }
        with httpx.Client(trust_env=False) as client:
            task_id = client.post(f"{sim.base_url}{CREATE}", json=body, headers=AUTH).json()[
                "data"
            ]["taskId"]
        wait_until(lambda: len(rec.callbacks) == 1)
        assert rec.callbacks[0]["data"]["taskId"] == task_id
        assert rec.callbacks[0]["data"]["state"] == "success"
        assert sim.stats()["requests_by_endpoint"] == {"create": 1}
