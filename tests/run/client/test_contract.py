"""Contract tests: every example of the upstream page (api/upstream-doc.txt), verbatim.

The response examples are sent as the exact bytes the page shows; the request examples are
the bodies the page's two ``curl -d`` calls send, compared with what the client puts on the wire.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from flux_pipeline.errors import InsufficientCreditsError
from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH, ApiState, TaskStatus, build_create_body

from .support import API_KEY, BASE_URL, Script, make_client, respond, single_attempt_client

# --- the page's response examples, character for character --------------------------------

DOC_CREATE_SUCCESS = """{
  "code": 200,
  "message": "success",
  "data": {
    "taskId": "task_12345678"
  }
}"""

DOC_CREATE_ERROR = """{
  "code": 400,
  "message": "Insufficient credits",
  "data": null
}"""

DOC_STATUS_SUCCESS = r"""{
  "code": 200,
  "message": "success",
  "data": {
    "taskId": "task_12345678",
    "state": "success",
    "resultJson": "{\"resultUrls\":[\"https://r2.apixo.ai/xxx.png\"]}",
    "createTime": 1767965610929,
    "completeTime": 1767965652317,
    "costTime": 41388
  }
}"""

DOC_STATUS_FAILED = """{
  "code": 200,
  "message": "success",
  "data": {
    "taskId": "task_12345678",
    "state": "failed",
    "failCode": "CONTENT_VIOLATION",
    "failMsg": "Content does not meet safety guidelines"
  }
}"""

# --- the page's two request examples (the JSON after curl -d) ------------------------------

DOC_TEXT_TO_IMAGE = """{
    "request_type": "async",
    "input": {
      "mode": "pro",
      "prompt": "a castle on the hill at sunset",
      "aspect_ratio": "16:9",
      "output_format": "jpeg"
    }
  }"""

DOC_IMAGE_TO_IMAGE = """{
    "request_type": "async",
    "provider": "official",
    "input": {
      "mode": "max",
      "prompt": "transform this into a watercolor painting",
      "aspect_ratio": "16:9",
      "image_urls": ["https://example.com/ref.jpg"],
      "output_format": "png",
      "safetyTolerance": 2
    }
  }"""


def _doc_answer(text: str) -> Script:
    """A one-answer script replying HTTP 200 with the page's example bytes."""
    return Script(respond(200, content=text.encode(), headers={"Content-Type": "application/json"}))


@pytest.mark.anyio
async def test_create_success_example_gives_task_id() -> None:
    script = _doc_answer(DOC_CREATE_SUCCESS)
    async with single_attempt_client(script) as client:
        task_id = await client.create_task(build_create_body({"input": {"prompt": "x"}}))
    assert task_id == "task_12345678"
    assert script.count == 1


@pytest.mark.anyio
async def test_create_error_example_is_insufficient_credits() -> None:
    script = _doc_answer(DOC_CREATE_ERROR)
    async with single_attempt_client(script) as client:
        with pytest.raises(InsufficientCreditsError) as info:
            await client.create_task(build_create_body({"input": {"prompt": "x"}}))
    err = info.value
    assert err.code == 400
    assert err.status == 200
    assert err.method == "POST"
    assert err.path == CREATE_PATH
    assert "Insufficient credits" in str(err)
    assert err.exit_code == 3
    assert script.count == 1  # terminal: never retried


@pytest.mark.anyio
async def test_status_success_example_parses_result_json_string() -> None:
    script = _doc_answer(DOC_STATUS_SUCCESS)
    async with single_attempt_client(script) as client:
        status = await client.get_status("task_12345678")
    assert status == TaskStatus(
        task_id="task_12345678",
        state=ApiState.SUCCESS,
        result_urls=("https://r2.apixo.ai/xxx.png",),
        create_time=1767965610929,
        complete_time=1767965652317,
        cost_time=41388,
    )
    assert status.state.finished


@pytest.mark.anyio
async def test_status_failed_example_keeps_fail_code_and_message() -> None:
    script = _doc_answer(DOC_STATUS_FAILED)
    async with single_attempt_client(script) as client:
        status = await client.get_status("task_12345678")
    assert status == TaskStatus(
        task_id="task_12345678",
        state=ApiState.FAILED,
        fail_code="CONTENT_VIOLATION",
        fail_msg="Content does not meet safety guidelines",
    )
    assert status.state.finished


@pytest.mark.anyio
async def test_status_request_matches_the_documented_curl() -> None:
    script = _doc_answer(DOC_STATUS_FAILED)
    async with single_attempt_client(script) as client:
        await client.get_status("task_12345678")
    (request,) = script.requests
    assert request.method == "GET"
    assert request.url == httpx.URL(f"{BASE_URL}{STATUS_PATH}?taskId=task_12345678")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.content == b""


def _without_request_type(doc: str) -> dict[str, Any]:
    """The planned request: the documented body minus what build_create_body adds."""
    body: dict[str, Any] = json.loads(doc)
    del body["request_type"]
    return body


@pytest.mark.anyio
@pytest.mark.parametrize(
    "doc", [DOC_TEXT_TO_IMAGE, DOC_IMAGE_TO_IMAGE], ids=["text-to-image", "image-to-image"]
)
async def test_create_request_is_the_documented_body(doc: str) -> None:
    script = _doc_answer(DOC_CREATE_SUCCESS)
    body = build_create_body(_without_request_type(doc), request_type="async")
    async with single_attempt_client(script) as client:
        await client.create_task(body)
    (request,) = script.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{BASE_URL}{CREATE_PATH}")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    sent = json.loads(request.content)
    assert sent == json.loads(doc)
    # same key order as the page, too (camelCase safetyTolerance passed through untouched)
    assert list(sent) == list(json.loads(doc))
    assert list(sent["input"]) == list(json.loads(doc)["input"])


def test_build_create_body_callback_mode() -> None:
    body = build_create_body(
        {"input": {"prompt": "p"}},
        request_type="callback",
        callback_url="https://hooks.test/cb",
    )
    assert body == {
        "request_type": "callback",
        "callback_url": "https://hooks.test/cb",
        "input": {"prompt": "p"},
    }
    with pytest.raises(ValueError, match="callback_url"):
        build_create_body({"input": {}}, request_type="callback")


@pytest.mark.anyio
async def test_every_request_carries_the_bearer_key() -> None:
    script = Script(
        respond(200, content=DOC_CREATE_SUCCESS.encode()),
        respond(200, content=DOC_STATUS_SUCCESS.encode()),
    )
    async with make_client(script) as client:
        await client.create_task(build_create_body({"input": {"prompt": "x"}}))
        await client.get_status("task_12345678")
    assert [r.headers["Authorization"] for r in script.requests] == [f"Bearer {API_KEY}"] * 2
