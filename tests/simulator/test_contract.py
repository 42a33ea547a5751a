"""Every request and response example of the upstream page, against the simulator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flux_pipeline.simulator import ManualClock, SimConfig

from .helpers import AUTH, CREATE, running_sim, status

pytestmark = pytest.mark.anyio

TEXT_TO_IMAGE = {
    "request_type": "async",
    "input": {
        "mode": "pro",
        "prompt": "a castle on the hill at sunset",
        "aspect_ratio": "16:9",
        "output_format": "jpeg",
    },
}
IMAGE_TO_IMAGE = {
    "request_type": "async",
    "provider": "official",
    "input": {
        "mode": "max",
        "prompt": "transform this into a watercolor painting",
        "aspect_ratio": "16:9",
        "image_urls": ["https://example.com/ref.jpg"],
        "output_format": "png",
        "safetyTolerance": 2,
    },
}


def assert_envelope(body: dict[str, Any], code: int, message: str) -> None:
    assert set(body) == {"code", "message", "data"}
    assert body["code"] == code
    assert body["message"] == message


@pytest.mark.parametrize("example", [TEXT_TO_IMAGE, IMAGE_TO_IMAGE], ids=["t2i", "i2i"])
async def test_create_examples_are_accepted(example: dict[str, Any]) -> None:
    async with running_sim() as (client, _):
        response = await client.post(CREATE, json=example, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert_envelope(body, 200, "success")
    assert set(body["data"]) == {"taskId"}
    assert isinstance(body["data"]["taskId"], str)
    assert body["data"]["taskId"].startswith("task_")


async def test_create_error_example_insufficient_credits() -> None:
    async with running_sim(SimConfig(credits=0)) as (client, _):
        response = await client.post(CREATE, json=TEXT_TO_IMAGE, headers=AUTH)
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": "Insufficient credits", "data": None}


async def test_status_success_example_shape() -> None:
    clock = ManualClock()
    async with running_sim(clock=clock) as (client, _):
        response = await client.post(CREATE, json=IMAGE_TO_IMAGE, headers=AUTH)
        task_id = response.json()["data"]["taskId"]
        clock.advance(600)
        raw = await client.get(
            "/api/v1/statusTask/flux-kontext", params={"taskId": task_id}, headers=AUTH
        )
    body = raw.json()
    assert_envelope(body, 200, "success")
    data = body["data"]
    assert set(data) == {"taskId", "state", "resultJson", "createTime", "completeTime", "costTime"}
    assert data["taskId"] == task_id
    assert data["state"] == "success"
    assert isinstance(data["resultJson"], str)
    result = json.loads(data["resultJson"])
    assert set(result) == {"resultUrls"}
    assert len(result["resultUrls"]) == 1
    assert all(isinstance(u, str) and u.endswith(".png") for u in result["resultUrls"])
    for name in ("createTime", "completeTime", "costTime"):
        assert type(data[name]) is int
    assert data["costTime"] == data["completeTime"] - data["createTime"] > 0
    assert data["createTime"] == round(ManualClock()() * 1000)


async def test_status_failed_example_shape() -> None:
    clock = ManualClock()
    config = SimConfig(block_words=("castle",))
    async with running_sim(config, clock) as (client, _):
        response = await client.post(CREATE, json=TEXT_TO_IMAGE, headers=AUTH)
        task_id = response.json()["data"]["taskId"]
        clock.advance(600)
        data = await status(client, task_id)
    assert data["state"] == "failed"
    assert data["failCode"] == "CONTENT_VIOLATION"
    assert data["failMsg"] == "Content does not meet safety guidelines"
    assert "resultJson" not in data
    assert {"taskId", "state", "failCode", "failMsg"} <= set(data)
    assert set(data) - {"taskId", "state", "failCode", "failMsg"} <= {
        "createTime",
        "completeTime",
        "costTime",
    }


async def test_unfinished_states_show_only_their_fields() -> None:
    clock = ManualClock()
    async with running_sim(clock=clock) as (client, _):
        task_id = (await client.post(CREATE, json=TEXT_TO_IMAGE, headers=AUTH)).json()["data"][
            "taskId"
        ]
        first = await status(client, task_id)
        clock.advance(5)
        second = await status(client, task_id)
    assert first == {"taskId": task_id, "state": "pending", "createTime": first["createTime"]}
    assert second == {"taskId": task_id, "state": "processing", "createTime": first["createTime"]}
