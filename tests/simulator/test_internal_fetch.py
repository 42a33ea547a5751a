"""The simulator's own reads of its results (chained edits) are not hit by download faults."""

from __future__ import annotations

import json

import httpx
import pytest

from flux_pipeline.simulator import Faults, ManualClock, SimConfig, SimulatorThread

from .helpers import AUTH, CREATE, STATUS, wait_until


def test_truncation_hits_clients_but_not_the_simulators_own_reference_fetch() -> None:
    clock = ManualClock()
    config = SimConfig(faults=Faults(truncate_rate=1.0))
    with SimulatorThread(config, clock=clock) as sim, httpx.Client(base_url=sim.base_url) as http:
        body = {"input": {"prompt": "a parent image", "output_format": "png"}}
        parent = http.post(CREATE, json=body, headers=AUTH).json()["data"]["taskId"]
        sim.advance(3600)
        data = http.get(STATUS, params={"taskId": parent}, headers=AUTH).json()["data"]
        url = json.loads(data["resultJson"])["resultUrls"][0]
        with pytest.raises(httpx.RemoteProtocolError):  # a client download is cut short
            http.get(url)
        edit = {"input": {"prompt": "edit it", "image_urls": [url]}}
        child = http.post(CREATE, json=edit, headers=AUTH).json()["data"]["taskId"]
        sim.advance(3600)

        def finished() -> bool:
            state = http.get(STATUS, params={"taskId": child}, headers=AUTH).json()["data"]
            return str(state["state"]) in ("success", "failed")

        wait_until(finished)
        state = http.get(STATUS, params={"taskId": child}, headers=AUTH).json()["data"]
        assert state["state"] == "success", state
        stats = sim.stats()
        assert stats["requests_by_endpoint"]["results_internal"] == 1
