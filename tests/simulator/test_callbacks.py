"""Callback mode over real HTTP: delivery to a loopback receiver, retries, skipped hosts."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from flux_pipeline.simulator import ManualClock, SimConfig, SimulatorThread

from .helpers import AUTH, CREATE, STATUS, Receiver, receiver, wait_until


@pytest.fixture(scope="module")
def rec() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    config = SimConfig(block_words=("forbidden",), callback_attempts=3, callback_backoff=0.01)
    with SimulatorThread(config, clock=ManualClock()) as server:
        yield server


def submit(sim: SimulatorThread, callback_url: str, prompt: str = "a castle") -> str:
    body = {"request_type": "callback", "callback_url": callback_url, "input": {"prompt": prompt}}
    with httpx.Client(trust_env=False) as client:
        response = client.post(f"{sim.base_url}{CREATE}", json=body, headers=AUTH)
    task_id = response.json()["data"]["taskId"]
    assert isinstance(task_id, str)
    return task_id


def status_data(sim: SimulatorThread, task_id: str) -> object:
    with httpx.Client(trust_env=False) as client:
        response = client.get(f"{sim.base_url}{STATUS}", params={"taskId": task_id}, headers=AUTH)
    return response.json()["data"]


def test_callbacks_carry_the_status_envelope(sim: SimulatorThread, rec: Receiver) -> None:
    rec.callbacks.clear()
    ok = submit(sim, f"{rec.base_url}/callback")
    bad = submit(sim, f"{rec.base_url}/callback", "a forbidden castle")
    assert rec.callbacks == []
    sim.advance(3600)
    wait_until(lambda: len(rec.callbacks) == 2)
    by_id = {c["data"]["taskId"]: c for c in rec.callbacks}
    for task_id in (ok, bad):
        assert by_id[task_id] == {
            "code": 200,
            "message": "success",
            "data": status_data(sim, task_id),
        }
    assert by_id[ok]["data"]["state"] == "success"
    assert by_id[bad]["data"]["failCode"] == "CONTENT_VIOLATION"
    wait_until(lambda: sim.stats()["callbacks_sent"] == 2)


def test_failed_deliveries_are_retried(sim: SimulatorThread, rec: Receiver) -> None:
    rec.callbacks.clear()
    rec.fail_next = 2
    submit(sim, f"{rec.base_url}/callback")
    sim.advance(3600)
    wait_until(lambda: len(rec.callbacks) == 1)
    assert rec.fail_next == 0
    wait_until(lambda: sim.stats()["callbacks_sent"] == 1)


def test_deliveries_that_never_succeed_are_counted(sim: SimulatorThread, rec: Receiver) -> None:
    rec.fail_next = 3
    submit(sim, f"{rec.base_url}/callback")
    submit(sim, "http://127.0.0.1:9/nobody-listens")
    sim.advance(3600)
    wait_until(lambda: sim.stats()["callbacks_failed"] == 2)
    assert rec.fail_next == 0
    assert sim.stats()["callbacks_sent"] == 0


def test_non_loopback_callbacks_are_skipped(sim: SimulatorThread) -> None:
    submit(sim, "https://example.com/hook")
    submit(sim, "http://10.1.2.3/hook")
    sim.advance(3600)
    stats = sim.stats()
    assert stats["callbacks_skipped"] == 2
    assert stats["callbacks_sent"] == stats["callbacks_failed"] == 0
