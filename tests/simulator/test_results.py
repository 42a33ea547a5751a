"""Result images: real, deterministic, right format and aspect ratio, expiring."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from PIL import Image

from flux_pipeline.simulator import ManualClock, SimConfig
from flux_pipeline.simulator.images import ImageCache, ImageSpec, dimensions, render

from .helpers import create_id, running_sim, status

pytestmark = pytest.mark.anyio


async def finished_urls(client: httpx.AsyncClient, clock: ManualClock, task_id: str) -> list[str]:
    clock.advance(3600)
    data = await status(client, task_id)
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert isinstance(urls, list)
    return urls


@pytest.mark.parametrize(
    ("fmt", "pil_format", "ratio", "size"),
    [
        ("jpeg", "JPEG", "16:9", (256, 144)),
        ("png", "PNG", "9:21", (110, 256)),
        ("webp", "WEBP", "1:1", (256, 256)),
        ("png", "PNG", "3:2", (256, 171)),
    ],
)
async def test_results_are_images_of_the_requested_format_and_ratio(
    fmt: str, pil_format: str, ratio: str, size: tuple[int, int]
) -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(), clock) as (client, _):
        task_id = await create_id(client, input={"output_format": fmt, "aspect_ratio": ratio})
        (url,) = await finished_urls(client, clock, task_id)
        response = await client.get(url)
    assert url.startswith(f"http://sim.test/results/{task_id}/0.")
    assert response.status_code == 200
    assert response.headers["content-type"] == f"image/{fmt}"
    assert int(response.headers["content-length"]) == len(response.content)
    image = Image.open(io.BytesIO(response.content))
    assert image.format == pil_format
    assert image.size == size


async def test_several_results_per_task_and_a_larger_size() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(results_per_task=3, image_size=512), clock) as (client, _):
        task_id = await create_id(client, input={"aspect_ratio": "4:3"})
        urls = await finished_urls(client, clock, task_id)
        bodies = [(await client.get(u)).content for u in urls]
    assert len(urls) == 3
    assert len(set(bodies)) == 3
    assert Image.open(io.BytesIO(bodies[0])).size == (512, 384)


async def test_results_are_deterministic_per_task_and_cached() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(), clock) as (client, sim):
        task_id = await create_id(client)
        (url,) = await finished_urls(client, clock, task_id)
        first = (await client.get(url)).content
        second = (await client.get(url)).content
        assert len(sim.images) == 1
    assert first == second
    task = sim.store.tasks[task_id]
    spec = ImageSpec(task_id, task.request.prompt, 0, "1:1", "jpeg", 256)
    assert render(spec) == first


async def test_results_are_404_before_success_for_failures_and_bad_names() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(block_words=("bad",)), clock) as (client, _):
        task_id = await create_id(client)
        failed_id = await create_id(client, "bad")
        early = await client.get(f"/results/{task_id}/0.jpg")
        clock.advance(3600)
        assert (await client.get(f"/results/{task_id}/0.jpg")).status_code == 200
        others = [
            f"/results/{failed_id}/0.jpg",
            f"/results/{task_id}/1.jpg",
            f"/results/{task_id}/0.png",
            f"/results/{task_id}/x.jpg",
            "/results/task_unknown/0.jpg",
        ]
        answers = [(await client.get(path)).status_code for path in others]
    assert early.status_code == 404
    assert answers == [404] * len(others)


async def test_results_expire_after_the_ttl() -> None:
    clock = ManualClock()
    async with running_sim(SimConfig(result_ttl=15 * 86400), clock) as (client, sim):
        task_id = await create_id(client)
        (url,) = await finished_urls(client, clock, task_id)
        complete = sim.store.tasks[task_id].complete_time
        clock.set(complete + 15 * 86400 - 1)
        assert (await client.get(url)).status_code == 200
        clock.advance(1)
        assert (await client.get(url)).status_code == 404
        assert (await status(client, task_id))["state"] == "success"


def test_dimensions_keep_the_long_side() -> None:
    assert dimensions("21:9", 256) == (256, 110)
    assert dimensions("1:1", 100) == (100, 100)
    assert dimensions("2:3", 300) == (200, 300)


def test_image_cache_is_bounded() -> None:
    cache = ImageCache(2)
    specs = [ImageSpec(f"t{i}", "p", 0, "1:1", "png", 16) for i in range(3)]
    for spec in specs:
        cache.put(spec, b"x")
    assert len(cache) == 2
    assert cache.get(specs[0]) is None
    assert cache.get(specs[2]) == b"x"
