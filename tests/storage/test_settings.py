"""Storage settings, redaction of the AWS secrets, the lock's ``object`` field, and the rule
that boto3 is only ever called in worker threads, bounded (docs/storage.md)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline import redact
from flux_pipeline.errors import UsageError
from flux_pipeline.manifest.models import Storage
from flux_pipeline.report.lockfile import FORMAT, parse_lock
from flux_pipeline.report.locktext import lock_pieces
from flux_pipeline.run.storage import MAX_CALLS, ObjectStore, StorageSettings, storage_settings

from ..run.support import await_for
from .support import SECRET_KEY, SESSION_TOKEN

NO_FLAGS: dict[str, str | None] = {}


def test_no_section_and_no_bucket_is_no_storage() -> None:
    assert storage_settings(None, flags=NO_FLAGS, environ={}) is None


def test_flag_over_environment_over_manifest() -> None:
    section = Storage(bucket="from-manifest", prefix="m", endpoint_url="http://m.example")
    env = {"FLUX_PIPELINE_S3_BUCKET": "from-env", "FLUX_PIPELINE_S3_PREFIX": "e"}
    settings = storage_settings(section, flags={"bucket": "from-flag"}, environ=env)
    assert settings == StorageSettings(
        bucket="from-flag", prefix="e", endpoint_url="http://m.example", url_lifetime=6 * 3600
    )
    only_env = storage_settings(None, flags=NO_FLAGS, environ=env)
    assert only_env is not None
    assert (only_env.bucket, only_env.prefix, only_env.publish) == ("from-env", "e", False)


def test_publish_flag_turns_publishing_on() -> None:
    settings = storage_settings(Storage(bucket="abc"), flags=NO_FLAGS, environ={}, publish=True)
    assert settings is not None
    assert settings.publish


@pytest.mark.parametrize(
    ("section", "flags", "publish", "message"),
    [
        (None, NO_FLAGS, True, "--publish needs storage"),
        (Storage(prefix="x"), NO_FLAGS, False, "storage needs a bucket"),
        (None, {"bucket": "Not_A_Bucket"}, False, "storage: bucket: String should match"),
        (Storage(bucket="abc"), {"endpoint_url": "ftp://x"}, False, "storage: endpoint_url"),
    ],
)
def test_bad_settings_are_one_line(
    section: Storage | None, flags: dict[str, str | None], publish: bool, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        storage_settings(section, flags=flags, environ={}, publish=publish)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [("90s", 90), ("30m", 1800), ("1d12h", 129600), (7, 7), ("7d", 604800)]
)
def test_url_lifetime_is_a_duration(value: Any, seconds: int) -> None:
    assert Storage.model_validate({"url_lifetime": value}).url_lifetime == seconds


@pytest.mark.parametrize("value", ["8d", "0s", "soon", True, 1.5, 604801])
def test_url_lifetime_beyond_what_s3_presigns_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="url_lifetime"):
        Storage.model_validate({"url_lifetime": value})


def test_the_aws_secrets_of_the_environment_are_redacted() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN}
    with redact.scope():
        redact.register(*redact.environment_secrets(env))
        text = f"a={SECRET_KEY} b={SESSION_TOKEN.replace('-', '%2D')}"
        assert redact.scrub(text) == "a=[redacted] b=[redacted]"


def _lock_text(version: int, output: dict[str, Any]) -> str:
    entry: dict[str, Any] = {
        "attempts": 1,
        "failCode": None,
        "id": "hero#1",
        "outputs": [output],
        "parent": None,
        "parent_key": None,
        "parent_output_index": None,
        "request": {},
        "result_urls": ["https://example.com/0.png"],
        "state": "done",
        "step": "hero",
        "taskId": "t1",
        "urls_expire": "2030-01-01T00:00:00Z",
    }
    return json.dumps({"format": version, "manifest": "m", "tasks": {"a" * 64: entry}})


def test_a_lock_of_format_1_is_still_read(tmp_path: Path) -> None:
    output = {"bytes": 3, "path": "hero.png", "sha256": "b" * 64}
    lock = parse_lock(tmp_path / "m.lock.json", _lock_text(1, output))
    assert lock.entries["a" * 64].outputs[0].stored is None
    text = "".join(lock_pieces("m", lock.entries))
    assert json.loads(text)["format"] == 1  # nothing published: written as before
    assert '"object"' not in text


def test_an_output_object_round_trips_and_is_checked(tmp_path: Path) -> None:
    key = "team/outputs/sha256/" + "b" * 64 + ".png"
    output = {"bytes": 3, "object": key, "path": "hero.png", "sha256": "b" * 64}
    lock = parse_lock(tmp_path / "m.lock.json", _lock_text(2, output))
    [read] = lock.entries["a" * 64].outputs
    assert read.stored == key
    assert read.to_json() == output
    assert json.loads("".join(lock_pieces("m", lock.entries)))["format"] == FORMAT == 2
    for bad in ("../x", "team/refs/sha256/" + "b" * 64 + ".png", ""):
        with pytest.raises(UsageError, match="object"):
            parse_lock(tmp_path / "m.lock.json", _lock_text(2, output | {"object": bad}))


class _SlowClient:
    """A stand-in boto3 client: every HEAD waits until released; records its threads."""

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.active = 0
        self.most = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def head_object(self, **_: Any) -> None:
        with self._lock:
            self.threads.add(threading.get_ident())
            self.active += 1
            self.most = max(self.most, self.active)
        self.release.wait(10)
        with self._lock:
            self.active -= 1

    def generate_presigned_url(self, *_: Any, **__: Any) -> str:
        self.threads.add(threading.get_ident())
        return "http://127.0.0.1/x"


@pytest.mark.anyio
async def test_boto3_runs_in_bounded_worker_threads() -> None:
    client = _SlowClient()
    objects = ObjectStore(StorageSettings(bucket="abc"), client)
    loop_thread = threading.get_ident()
    async with anyio.create_task_group() as tg:
        for _ in range(3 * MAX_CALLS):
            tg.start_soon(objects.call, objects.exists, "k")

        async def all_admitted() -> bool:
            stats = objects.limiter.statistics()
            return client.active == MAX_CALLS and stats.tasks_waiting == 2 * MAX_CALLS

        await await_for(all_admitted, within=10, what="8 calls running, 16 waiting")
        client.release.set()
    assert client.most == MAX_CALLS
    assert await objects.call(objects.presign, "k") == "http://127.0.0.1/x"
    assert loop_thread not in client.threads
