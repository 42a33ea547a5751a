"""Fault injection: every kind observably happens, and /_sim/* is never affected."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from flux_pipeline.simulator import Faults, SimConfig, SimulatorThread

from .helpers import AUTH, CREATE, STATUS, create, create_id, running_sim, wait_until

pytestmark = pytest.mark.anyio


async def test_server_errors_happen_before_any_side_effect() -> None:
    async with running_sim(SimConfig(faults=Faults(error_rate=1.0))) as (client, sim):
        created = await create(client)
        polled = await client.get(STATUS, params={"taskId": "task_x"}, headers=AUTH)
        unauthenticated = await create(client, headers={})
        admin = await client.get("/_sim/stats")
    for response in (created, polled, unauthenticated):
        assert response.status_code in (500, 502, 503)
        body = response.json()
        assert body["code"] == response.status_code
        assert body["data"] is None
    assert admin.status_code == 200
    assert admin.json()["server_errors"] == 3
    assert sim.stats.creates == 0
    assert sim.credits.spent == 0


async def test_fault_decisions_are_seeded() -> None:
    async def codes(seed: int) -> list[int]:
        config = SimConfig(seed=seed, faults=Faults(error_rate=0.5))
        async with running_sim(config) as (client, _):
            return [(await create(client)).status_code for _ in range(30)]

    first = await codes(3)
    assert first == await codes(3)
    assert 200 in first
    assert set(first) - {200}


async def test_rate_limit_burst_set_at_runtime() -> None:
    async with running_sim() as (client, sim):
        answer = await client.post("/_sim/faults", json={"rate_limit_burst": 2})
        assert answer.json()["rate_limit_burst"] == 2
        responses = [await create(client) for _ in range(3)]
        stats = (await client.get("/_sim/stats")).json()
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].json() == {"code": 429, "message": "Rate limit exceeded", "data": None}
    assert responses[0].headers["Retry-After"] == "1"
    assert stats["rate_limited"] == 2
    assert stats["faults"]["rate_limit_burst"] == 0
    assert sim.stats.creates == 1


async def test_errors_as_200_keep_the_code_in_the_body() -> None:
    async with running_sim(SimConfig(faults=Faults(errors_as_200=True, rate_limit_burst=1))) as (
        client,
        _,
    ):
        limited = await create(client)
        unauthorized = await create(client, headers={"Authorization": "Bearer nope"})
        missing = await client.get(STATUS, params={"taskId": "task_x"}, headers=AUTH)
        invalid = await client.post(CREATE, json={}, headers=AUTH)
    assert [r.status_code for r in (limited, unauthorized, missing, invalid)] == [200] * 4
    assert [r.json()["code"] for r in (limited, unauthorized, missing, invalid)] == [
        429,
        401,
        404,
        400,
    ]
    assert limited.headers["Retry-After"] == "1"


async def test_slow_answers_are_delayed() -> None:
    faults = Faults(slow_rate=1.0, slow_seconds=0.2)
    async with running_sim(SimConfig(faults=faults)) as (client, sim):
        started = time.monotonic()
        task_id = await create_id(client)
        elapsed = time.monotonic() - started
        await client.post("/_sim/faults", json={"slow_rate": 0})
        started = time.monotonic()
        await client.get(STATUS, params={"taskId": task_id}, headers=AUTH)
        fast = time.monotonic() - started
    assert elapsed >= 0.2
    assert fast < 0.2
    assert sim.stats.slowed == 1


@pytest.mark.parametrize(
    "changes",
    [{"no_such_fault": 1}, {"error_rate": 2}, {"drop_after": "yes"}, {"rate_limit_burst": 1.5}],
)
async def test_invalid_fault_changes_are_refused(changes: dict[str, object]) -> None:
    async with running_sim() as (client, sim):
        response = await client.post("/_sim/faults", json=changes)
    assert response.status_code == 400
    assert "error" in response.json()
    assert sim.faults.faults == Faults()


# -- over a real server: what ASGITransport cannot show ---------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(task_seconds=0.05, task_spread=0)) as sim:
        yield sim


@pytest.fixture
def live(server: SimulatorThread) -> Iterator[tuple[SimulatorThread, httpx.Client]]:
    with httpx.Client(base_url=server.base_url, headers=AUTH, trust_env=False) as client:
        yield server, client
    server.set_faults(**dataclasses.asdict(Faults()))


def test_dropped_before_processing_creates_nothing(
    live: tuple[SimulatorThread, httpx.Client],
) -> None:
    sim, client = live
    before = sim.stats()
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(httpx.TransportError):  # RemoteProtocolError, in practice
        client.post(CREATE, json={"input": {"prompt": "dropped"}})
    after = sim.stats()
    assert after["drops"] == before["drops"] + 1
    assert after["creates"] == before["creates"]


def test_dropped_after_processing_is_an_ambiguous_create(
    live: tuple[SimulatorThread, httpx.Client],
) -> None:
    sim, client = live
    before = sim.stats()
    sim.set_faults(drop_rate=1.0, drop_after=True)
    with pytest.raises(httpx.TransportError):
        client.post(CREATE, json={"input": {"prompt": "ambiguous"}})
    after = sim.stats()
    assert after["creates"] == before["creates"] + 1
    assert after["drops"] == before["drops"] + 1


def test_lost_after_is_independent_of_drops_before(
    live: tuple[SimulatorThread, httpx.Client],
) -> None:
    """Both kinds of lost answer in one run: dropped before (nothing created) and lost after
    (created and billed, the answer never arrives)."""
    sim, client = live
    before = sim.stats()
    sim.set_faults(lost_after_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post(CREATE, json={"input": {"prompt": "lost after"}})
    after = sim.stats()
    assert after["creates"] == before["creates"] + 1
    assert after["lost_after"] == before["lost_after"] + 1
    sim.set_faults(lost_after_rate=0.0, drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        client.post(CREATE, json={"input": {"prompt": "dropped before"}})
    final = sim.stats()
    assert final["creates"] == after["creates"]
    assert final["lost_after"] == after["lost_after"]


@pytest.mark.parametrize(("fault", "creates"), [("gateway_rate", 0), ("gateway_after_rate", 1)])
def test_gateway_pages_have_no_api_envelope(
    live: tuple[SimulatorThread, httpx.Client], fault: str, creates: int
) -> None:
    """A proxy's 502/504 HTML page: before the API (nothing created) or after (created)."""
    sim, client = live
    before = sim.stats()
    sim.set_faults(**{fault: 1.0})
    response = client.post(CREATE, json={"input": {"prompt": f"through a gateway {fault}"}})
    assert response.status_code in (502, 504)
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text
    after = sim.stats()
    assert after["creates"] == before["creates"] + creates
    assert after["gateway_errors"] == before["gateway_errors"] + 1


def test_truncated_downloads_advertise_the_full_length(
    live: tuple[SimulatorThread, httpx.Client],
) -> None:
    sim, client = live
    task_id = client.post(CREATE, json={"input": {"prompt": "x"}}).json()["data"]["taskId"]

    def data() -> dict[str, object]:
        body = client.get(STATUS, params={"taskId": task_id}).json()
        assert isinstance(body["data"], dict)
        return body["data"]

    wait_until(lambda: data()["state"] == "success")
    (url,) = json.loads(str(data()["resultJson"]))["resultUrls"]
    whole = client.get(url)
    assert whole.status_code == 200
    sim.set_faults(truncate_rate=1.0, error_rate=1.0, drop_rate=1.0)  # only truncation applies
    received = bytearray()
    advertised: list[int] = []

    def download() -> None:
        with client.stream("GET", url) as response:
            advertised.append(int(response.headers["content-length"]))
            for chunk in response.iter_bytes():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        download()
    assert advertised == [len(whole.content)]
    assert 0 < len(received) < len(whole.content)
    assert received == whole.content[: len(received)]
    assert sim.stats()["truncated"] >= 1
