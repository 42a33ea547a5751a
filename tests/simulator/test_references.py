"""Reference images: data: URIs decoded, loopback URLs fetched, other hosts never contacted."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from flux_pipeline.simulator import ManualClock, SimConfig
from flux_pipeline.simulator.references import is_loopback, precheck, sniff

from .helpers import Receiver, await_until, create_id, image_bytes, receiver, running_sim, status

pytestmark = pytest.mark.anyio


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def files() -> Iterator[Receiver]:
    with receiver() as rec:
        rec.files["ok.png"] = (image_bytes("PNG"), "image/png")
        rec.files["ok.webp"] = (image_bytes("WEBP"), "image/webp")
        rec.files["page.html"] = (b"<html>not an image</html>", "text/html")
        rec.files["huge.jpg"] = (b"\xff\xd8\xff" + bytes(10 * 1024 * 1024), "image/jpeg")
        yield rec


async def outcome(config: SimConfig, urls: list[str]) -> dict[str, object]:
    clock = ManualClock()
    async with running_sim(config, clock) as (client, sim):
        task_id = await create_id(client, input={"image_urls": urls})
        assert (await status(client, task_id))["state"] == "pending"
        clock.advance(3600)
        task = sim.store.tasks[task_id]
        await await_until(lambda: task.checks_pending == 0)
        return await status(client, task_id)


@pytest.mark.parametrize(
    "url",
    [
        data_uri(image_bytes("PNG")),
        data_uri(image_bytes("JPEG"), "image/jpeg"),
        data_uri(image_bytes("WEBP"), "image/webp"),
        "https://example.com/ref.jpg",  # accepted as reachable, never contacted
        "http://203.0.113.9/ref.png",
    ],
)
async def test_good_references_succeed(url: str) -> None:
    data = await outcome(SimConfig(), [url])
    assert data["state"] == "success"


@pytest.mark.parametrize(
    "url",
    [
        data_uri(b"GIF89a" + bytes(20), "image/gif"),
        data_uri(b"\xff\xd8\xff" + bytes(10 * 1024 * 1024), "image/jpeg"),
        "data:image/png;base64,!!!not-base64!!!",
        "data:image/png;base64",
        "https://unreachable.example/ref.jpg",
        "ftp://example.com/ref.jpg",
        "not a url",
    ],
    ids=["bad-magic", "over-10MB", "bad-base64", "no-comma", "unreachable", "ftp", "garbage"],
)
async def test_bad_references_fail_with_invalid_image_url(url: str) -> None:
    config = SimConfig(unreachable_hosts=("unreachable.example",))
    data = await outcome(config, ["https://example.com/fine.png", url])
    assert data["state"] == "failed"
    assert data["failCode"] == "INVALID_IMAGE_URL"
    assert isinstance(data["failMsg"], str)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("ok.png", "success"),
        ("ok.webp", "success"),
        ("page.html", "failed"),
        ("huge.jpg", "failed"),
        ("missing.png", "failed"),
    ],
)
async def test_loopback_references_are_fetched(files: Receiver, name: str, state: str) -> None:
    data = await outcome(SimConfig(), [f"{files.base_url}/files/{name}"])
    assert data["state"] == state
    if state == "failed":
        assert data["failCode"] == "INVALID_IMAGE_URL"


async def test_a_task_whose_check_is_still_running_stays_processing() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(), clock) as (client, sim):
        # port 9 (discard) on loopback: refused at once, so the check ends quickly
        task_id = await create_id(client, input={"image_urls": ["http://127.0.0.1:9/x.png"]})
        task = sim.store.tasks[task_id]
        task.checks_pending += 1  # hold the check open
        clock.advance(3600)
        await await_until(lambda: task.checks_pending == 1)
        assert (await status(client, task_id))["state"] == "processing"
        before = clock()
        clock.advance(5)
        sim.store.check_done(task, None, clock())
        data = await status(client, task_id)
    assert data["state"] == "failed"  # the connection was refused
    assert data["completeTime"] == round((before + 5) * 1000)


def test_loopback_detection_and_magic_bytes() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("10.0.0.1", "example.com", "", None, "::2"))
    assert sniff(image_bytes("PNG")) == "png"
    assert sniff(image_bytes("JPEG")) == "jpeg"
    assert sniff(image_bytes("WEBP")) == "webp"
    assert sniff(b"RIFF0000WAVE") is None
    pre = precheck(["https://a.example/x.png", "http://localhost:1/y.png"], frozenset())
    assert pre.problem is None
    assert pre.to_fetch == ("http://localhost:1/y.png",)
