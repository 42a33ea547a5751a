"""Auth, request validation and unknown tasks."""

from __future__ import annotations

from typing import Any

import pytest

from flux_pipeline.simulator import SimConfig

from .helpers import AUTH, CREATE, STATUS, create, running_sim

pytestmark = pytest.mark.anyio

UNAUTHORIZED = {"code": 401, "message": "Invalid or missing API Key", "data": None}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sim-key"}, {"Authorization": ""}],
)
async def test_bad_or_missing_key_is_401_on_both_endpoints(headers: dict[str, str]) -> None:
    async with running_sim() as (client, sim):
        created = await client.post(CREATE, json={"input": {"prompt": "x"}}, headers=headers)
        polled = await client.get(STATUS, params={"taskId": "task_1"}, headers=headers)
    for response in (created, polled):
        assert response.status_code == 401
        assert response.json() == UNAUTHORIZED
    assert sim.stats.creates == 0


async def test_configured_keys_are_accepted_and_scheme_is_case_insensitive() -> None:
    async with running_sim(SimConfig(api_keys=("k1", "k2"))) as (client, _):
        ok = await create(client, headers={"Authorization": "bearer k2"})
        default_key = await create(client)
    assert ok.status_code == 200
    assert default_key.status_code == 401


async def test_unknown_task_is_404() -> None:
    async with running_sim() as (client, _):
        response = await client.get(STATUS, params={"taskId": "task_nope"}, headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"code": 404, "message": "Task not found", "data": None}


async def test_another_keys_task_is_not_found() -> None:
    async with running_sim(SimConfig(api_keys=("k1", "k2"))) as (client, _):
        created = await create(client, headers={"Authorization": "Bearer k1"})
        task_id = created.json()["data"]["taskId"]
        other = await client.get(
            STATUS, params={"taskId": task_id}, headers={"Authorization": "Bearer k2"}
        )
    assert other.status_code == 404


async def test_missing_task_id_is_400() -> None:
    async with running_sim() as (client, _):
        response = await client.get(STATUS, headers=AUTH)
    assert response.status_code == 400
    assert "taskId" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({}, "input"),
        ({"input": "a castle"}, "input: expected an object"),
        ({"input": {}}, "input.prompt"),
        ({"input": {"prompt": "   "}}, "input.prompt"),
        ({"input": {"prompt": 7}}, "input.prompt"),
        ({"input": {"prompt": "x", "mode": "ultra"}}, "input.mode"),
        ({"input": {"prompt": "x", "mode": "Max"}}, "did you mean 'max'"),
        ({"request_type": "sync", "input": {"prompt": "x"}}, "request_type"),
        ({"request_type": "callback", "input": {"prompt": "x"}}, "callback_url"),
        (
            {"request_type": "callback", "callback_url": "ftp://h/x", "input": {"prompt": "x"}},
            "callback_url",
        ),
        ({"provider": "cheap", "input": {"prompt": "x"}}, "provider"),
        ({"input": {"prompt": "x", "aspect_ratio": "5:4"}}, "input.aspect_ratio"),
        ({"input": {"prompt": "x", "output_format": "gif"}}, "input.output_format"),
        ({"input": {"prompt": "x", "image_urls": "https://a/b.png"}}, "input.image_urls"),
        ({"input": {"prompt": "x", "image_urls": [1]}}, "input.image_urls"),
        ({"input": {"prompt": "x", "image_urls": ["https://a/b.png"] * 11}}, "at most 10"),
    ],
)
async def test_invalid_bodies_are_400_with_a_clear_message(body: Any, fragment: str) -> None:
    async with running_sim() as (client, sim):
        response = await client.post(CREATE, json=body, headers=AUTH)
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == 400
    assert payload["data"] is None
    assert fragment in payload["message"]
    assert sim.stats.creates == 0


async def test_body_that_is_not_json_is_400() -> None:
    async with running_sim() as (client, _):
        response = await client.post(CREATE, content=b"{not json", headers=AUTH)
    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


async def test_defaults_and_unknown_fields() -> None:
    async with running_sim() as (client, sim):
        response = await create(
            client, "x", provider="value", extra_top=1, input={"future_field": {"a": 1}}
        )
        task = sim.store.tasks[response.json()["data"]["taskId"]]
    assert response.status_code == 200
    request = task.request
    assert (request.mode, request.aspect_ratio, request.output_format) == ("pro", "1:1", "jpeg")
    assert (request.request_type, request.provider) == ("async", "value")
    assert request.input["future_field"] == {"a": 1}


@pytest.mark.parametrize(
    "ratio", ["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
)
async def test_every_documented_aspect_ratio_is_accepted(ratio: str) -> None:
    async with running_sim() as (client, _):
        response = await create(client, input={"aspect_ratio": ratio, "output_format": "webp"})
    assert response.status_code == 200
