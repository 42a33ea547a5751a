"""Gallery thumbnails (``report/thumbs.py``): small WebPs, content-addressed under the state
directory, made when an image is downloaded; a broken image never fails anything."""

from __future__ import annotations

import hashlib
import io
import stat
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from PIL import Image

from flux_pipeline.outcome import Buckets
from flux_pipeline.report import thumbs
from flux_pipeline.report.thumbs import LONG_SIDE, ImageInfo, ensure_thumb, thumb_path
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.downloads import Downloaded
from flux_pipeline.run.engine import Engine, EngineSettings
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.states import TaskState

from ..run.engine.test_engine_memory import QUICK, FakeApi, manifest


def image_bytes(width: int, height: int, kind: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 120, 200, 128)[: len(mode)]).save(buffer, format=kind)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_a_thumbnail_is_a_small_webp_named_by_the_image_hash(tmp_path: Path) -> None:
    image = tmp_path / "shot" / "tall.png"
    sha = write(image, image_bytes(576, 1024))
    info = ensure_thumb(tmp_path, image, sha)
    assert info == ImageInfo(576, 1024, f".flux-pipeline/thumbs/{sha}.webp")
    thumb = tmp_path / ".flux-pipeline" / "thumbs" / f"{sha}.webp"
    with Image.open(thumb) as im:
        assert im.format == "WEBP"
        assert im.size == (216, LONG_SIDE)  # 9:16 kept, longest side 384
    assert stat.S_IMODE(thumb.stat().st_mode) == 0o644
    assert list(thumb.parent.iterdir()) == [thumb]  # no temporary file left
    made = thumb.stat().st_mtime_ns
    assert ensure_thumb(tmp_path, image, sha) == info  # there already: not made again
    assert thumb.stat().st_mtime_ns == made


@pytest.mark.parametrize(
    ("kind", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("PNG", "L")]
)
def test_every_result_type_gets_one(tmp_path: Path, kind: str, mode: str) -> None:
    image = tmp_path / "a.img"
    sha = write(image, image_bytes(100, 50, kind, mode))
    info = ensure_thumb(tmp_path, image, sha)
    assert info is not None
    assert (info.width, info.height) == (100, 50)  # a small image is not enlarged
    assert info.thumb is not None
    with Image.open(tmp_path / info.thumb) as im:
        assert im.size == (100, 50)


def test_a_broken_image_gets_none_and_raises_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    sha = write(garbage, b"\x89PNG\r\n\x1a\n" + b"\x00" * 24)
    assert ensure_thumb(tmp_path, garbage, sha) is None
    truncated = tmp_path / "truncated.png"
    whole = image_bytes(300, 200)
    sha = write(truncated, whole[: len(whole) // 2])  # the header says 300 x 200
    assert ensure_thumb(tmp_path, truncated, sha) in (ImageInfo(300, 200, None), None)
    assert ensure_thumb(tmp_path, tmp_path / "gone.png", "0" * 64) is None
    good = tmp_path / "good.png"
    write(good, image_bytes(10, 10))
    assert ensure_thumb(tmp_path, good, "../../x") == ImageInfo(10, 10, None)  # not a hash
    assert not (tmp_path / ".flux-pipeline" / "thumbs").exists()
    with pytest.raises(ValueError, match="SHA-256"):
        thumb_path("../x")


@pytest.mark.anyio
async def test_images_get_their_thumbnail_when_downloaded(tmp_path: Path) -> None:
    """The engine alone (no report written): the download makes the thumbnail; the broken
    result of "b" is downloaded as it is, with none."""
    plan = manifest(tmp_path, ["a", "b"])
    good = image_bytes(90, 160)
    bad = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24

    async def fetch(http: httpx.AsyncClient, url: str, dest: Path) -> Downloaded:
        data = good if url.endswith("t1/0.png") else bad
        sha = write(dest, data)
        return Downloaded(bytes=len(data), sha256=sha, image_type="png")

    store = MemoryStore()
    out = tmp_path / "out"
    engine = Engine(
        plan=plan,
        store=store,
        client=FakeApi(),
        downloads=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
        budget=TokenBucket(1e9),
        settings=EngineSettings(out_dir=out, timing=QUICK),
        fetch=fetch,
    )
    with anyio.fail_after(10):
        outcome = await engine.run()
    assert outcome.buckets == Buckets(done=2)
    assert all(store.state(spec.key) is TaskState.DOWNLOADED for spec in plan.tasks)
    assert not (out / "report.json").exists()
    thumbs = sorted(p.name for p in (out / ".flux-pipeline" / "thumbs").iterdir())
    assert thumbs == [hashlib.sha256(good).hexdigest() + ".webp"]


@pytest.mark.anyio
async def test_no_thread_for_a_thumbnail_fails_no_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a tight memory limit a worker thread may not start ("can't start new thread",
    seen in tests/run/test_shipped_examples.py): the image is downloaded, without one."""

    async def no_thread(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
    image = tmp_path / "a.png"
    sha = write(image, image_bytes(10, 10))
    await thumbs.ensure_thumb_in_thread(tmp_path, image, sha)  # raises nothing
    assert not (tmp_path / ".flux-pipeline").exists()
