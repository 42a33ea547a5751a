"""Callback mode (``--request-type callback``): a full run, and forged callbacks that change
nothing, against the receiver of a real run and against ``CallbackReceiver`` on its own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from flux_pipeline.run import receiver as receiver_module
from flux_pipeline.run.receiver import MAX_CALLBACK_BYTES, CallbackReceiver
from flux_pipeline.run.runner import RunResult
from flux_pipeline.simulator import ManualClock, SimConfig, SimulatorThread

from .support import (
    admin_of,
    await_for,
    chained_manifest,
    check_outputs,
    db_rows,
    run_inprocess,
    settled_report,
    state_path,
    write_manifest,
)

KEY = "callbacks-key"


@pytest.mark.anyio
async def test_callback_mode_runs_the_batch_with_about_two_requests_per_task(
    tmp_path: Path,
) -> None:
    """A whole chained batch in callback mode: exit 0, every file right, and the API sees one
    create and (about) one confirming status call per task: no polling."""
    subjects, styles = ["fox", "owl", "bear", "hare", "wolf"], ["ink", "oil", "pastel", "pixel"]
    tasks = len(subjects) * len(styles) * 2
    manifest = write_manifest(tmp_path, chained_manifest("callbacks", subjects, styles))
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.3, task_spread=0.05)
    with SimulatorThread(config) as sim:
        result = await run_inprocess(
            manifest, out, base_url=sim.base_url, api_key=KEY, request_type="callback"
        )
        stats = await admin_of(sim).astats()
        report = await settled_report(
            manifest, out, base_url=sim.base_url, api_key=KEY, code=0, request_type="callback"
        )
        secret_url = (await admin_of_sim_task(sim, report["tasks"][0]["taskId"]))["callback_url"]
    calls = stats["requests_by_endpoint"]
    per_task = (calls["create"] + calls["status"]) / tasks
    print(
        f"\ncallback mode: {tasks} tasks, {calls['create']} creates, {calls['status']} status "
        f"calls, {stats['callbacks_sent']} callbacks, {per_task:.2f} API requests per task"
    )
    assert result.outcome.exit_code == 0, result.outcome
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == tasks
    assert report["run"]["settings"]["request_type"] == "callback"
    assert calls["create"] == tasks
    assert stats["callbacks_sent"] == tasks
    assert stats["callbacks_failed"] == 0
    assert tasks <= calls["status"] <= 1.25 * tasks
    assert per_task <= 2.25
    # the callback URL carries a per-run secret, then the task's key: the secret is never in
    # the report
    secret, key = secret_url.split("/callbacks/", 1)[1].split("/")
    assert key == report["tasks"][0]["key"]
    assert secret not in (out / "report.json").read_text()


async def admin_of_sim_task(sim: SimulatorThread, task_id: str) -> dict[str, Any]:
    request: dict[str, Any] = (await admin_of(sim).atask(task_id))["request"]
    return request


@pytest.mark.anyio
async def test_forged_and_replayed_callbacks_change_nothing_in_a_real_run(
    tmp_path: Path,
) -> None:
    """A real callback-mode run on a manual clock, paused between its two steps (shots done
    and downloaded, edits running). Against its receiver (URL and secret as the simulator
    received them in the create requests):

    - replays of the shots' real callbacks: 200, no status call, no state change;
    - a wrong secret: 404; garbage: 400; too big: 413; an unknown taskId: ignored;
    - a forged "success" for a running edit, pointing at another image: costs exactly one
      confirming status call, which says "processing", so nothing changes.

    Then the clock moves, the edits finish and the run ends exit 0 with the real images, and
    exactly one status call per task plus the one the forgery cost.
    """
    manifest = write_manifest(tmp_path, chained_manifest("forged", ["fox", "owl", "bear"], ["ink"]))
    out = tmp_path / "out"
    db = state_path(out)
    config = SimConfig(api_keys=(KEY,), task_seconds=100.0, task_spread=0.0)
    results: list[RunResult] = []
    with SimulatorThread(config, clock=ManualClock()) as sim:
        admin = admin_of(sim)

        async def run() -> None:
            results.append(
                await run_inprocess(
                    manifest, out, base_url=sim.base_url, api_key=KEY, request_type="callback"
                )
            )

        async def creates(n: int) -> None:
            async def reached() -> bool:
                count: int = (await admin.astats())["creates"]
                return count >= n

            await await_for(reached, within=20, what=f"{n} creates")

        async def status_calls() -> int:
            count: int = (await admin.astats())["requests_by_endpoint"].get("status", 0)
            return count

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await creates(3)
                await admin.aadvance(100.0)  # the shots finish: callbacks, confirms, downloads
                await creates(6)  # ... and the edits are created: the shots are on disk
                rows = db_rows(db)
                shots = [r for r in rows.values() if r.readable_id.count("/") == 0]
                edits = [r for r in rows.values() if r.readable_id.count("/") == 1]
                assert {r.state for r in shots} == {"downloaded"}
                assert {r.state for r in edits} == {"submitted"}
                first = await admin_of_sim_task(sim, edits[0].task_id or "")
                url = first["callback_url"]
                assert isinstance(url, str)
                assert url.startswith("http://127.0.0.1:")
                calls_before = await status_calls()
                db_before = rows

                async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                    for shot in shots:
                        view = await admin.atask(shot.task_id or "")
                        real = {"code": 200, "message": "success", "data": view["status"]}
                        for _ in range(2):
                            answer = await client.post(url, json=real)
                            assert answer.status_code == 200
                    base, _secret, key = url.rsplit("/", 2)  # <receiver>/<secret>/<key>
                    for wrong in (f"{base}/not-the-secret/{key}", f"{base}/not-the-secret"):
                        assert (await client.post(wrong, json=real)).status_code == 404
                    garbage = await client.post(url, content=b"{not json")
                    assert garbage.status_code == 400
                    big = await client.post(url, content=b"x" * (MAX_CALLBACK_BYTES + 1))
                    assert big.status_code == 413
                    unknown = {"data": {"taskId": "task_forged_unknown", "state": "success"}}
                    assert (await client.post(url, json=unknown)).status_code == 200
                    assert await status_calls() == calls_before
                    assert db_rows(db) == db_before

                    target = edits[0]
                    forged = {
                        "taskId": target.task_id,
                        "state": "success",
                        "resultJson": json.dumps({"resultUrls": ["http://127.0.0.1:9/evil.png"]}),
                    }
                    assert (await client.post(url, json=forged)).status_code == 200

                    async def confirmed() -> bool:
                        return await status_calls() >= calls_before + 1

                    await await_for(confirmed, within=10, what="the forgery's confirmation")
                assert db_rows(db) == db_before
                assert await status_calls() == calls_before + 1

                await admin.aadvance(100.0)  # the edits finish
        stats = await admin.astats()
        report = await settled_report(
            manifest, out, base_url=sim.base_url, api_key=KEY, code=0, request_type="callback"
        )

    assert results[0].outcome.exit_code == 0, results[0].outcome
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == 6
    assert all("evil" not in o["url"] for t in report["tasks"] for o in t["outputs"])
    assert stats["requests_by_endpoint"]["status"] == 6 + 1
    assert stats["creates"] == 6


# --- the receiver on its own ----------------------------------------------------------------


class Hook:
    """A confirm hook that knows some taskIds and records every call."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.calls: list[str] = []
        self.keys: list[str | None] = []

    def __call__(self, task_id: str, key: str | None = None) -> bool:
        self.calls.append(task_id)
        self.keys.append(key)
        return task_id in self.known


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[CallbackReceiver, Hook, httpx.AsyncClient]]:
    hook = Hook({"task_known"})
    receiver = CallbackReceiver(hook, secret="s3cret-for-tests")
    transport = httpx.ASGITransport(app=receiver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield receiver, hook, client


@pytest.mark.anyio
async def test_receiver_accepts_both_shapes_for_a_known_task(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient],
) -> None:
    rec, hook, client = receiver
    data = {"taskId": "task_known", "state": "success"}
    for body in (data, {"code": 200, "message": "success", "data": data}):
        answer = await client.post(rec.path, json=body)
        assert answer.status_code == 200
    assert hook.calls == ["task_known", "task_known"]
    assert rec.counts["accepted"] == 2
    assert "s3cret" not in repr(rec)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "content", "headers", "code", "count"),
    [
        ("/callbacks/wrong", b'{"taskId": "task_known"}', {}, 404, "wrong secret"),
        ("/callbacks/", b'{"taskId": "task_known"}', {}, 404, None),
        ("SECRET", b"{garbage", {}, 400, "malformed"),
        ("SECRET", b'"just a string"', {}, 400, "malformed"),
        ("SECRET", b'{"data": {"state": "success"}}', {}, 400, "malformed"),
        ("SECRET", b'{"taskId": 12345}', {}, 400, "malformed"),
        ("SECRET", b"x" * (MAX_CALLBACK_BYTES + 1), {}, 413, "oversized"),
        ("SECRET", b"{}", {"content-length": "99999999"}, 413, "oversized"),
        ("SECRET", b"{}", {"content-length": "-1"}, 413, "oversized"),
    ],
    ids=[
        "wrong-secret",
        "no-secret",
        "garbage",
        "not-an-object",
        "no-task-id",
        "task-id-not-a-string",
        "oversized-body",
        "oversized-header",
        "bad-length",
    ],
)
async def test_receiver_refuses_forgeries_without_asking_the_engine(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient],
    path: str,
    content: bytes,
    headers: dict[str, str],
    code: int,
    count: str | None,
) -> None:
    rec, hook, client = receiver
    url = rec.path if path == "SECRET" else path
    answer = await client.post(url, content=content, headers=headers)
    assert answer.status_code == code
    assert hook.calls == []
    if count is not None:
        assert rec.counts[count] == 1


@pytest.mark.anyio
async def test_receiver_refuses_an_oversized_streamed_body(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient],
) -> None:
    """No Content-Length (chunked): the body is counted while read, and cut at the limit."""
    rec, hook, client = receiver

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_CALLBACK_BYTES // 1024 + 2):
            yield b"x" * 1024

    answer = await client.post(rec.path, content=chunks())
    assert answer.status_code == 413
    assert rec.counts["oversized"] == 1
    assert hook.calls == []


@pytest.mark.anyio
async def test_receiver_ignores_unknown_tasks_and_other_methods(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient],
) -> None:
    rec, hook, client = receiver
    answer = await client.post(rec.path, json={"data": {"taskId": "task_unknown"}})
    assert answer.status_code == 200
    assert hook.calls == ["task_unknown"]
    assert rec.counts["unknown task"] == 1
    assert rec.counts["accepted"] == 0
    assert (await client.get(rec.path)).status_code == 405
    assert hook.calls == ["task_unknown"]


async def _stalled_body() -> AsyncIterator[bytes]:
    """A body that starts and never ends (the client neither sends the rest nor leaves)."""
    yield b'{"data": '
    await anyio.Event().wait()


@pytest.mark.anyio
async def test_receiver_refuses_a_body_slower_than_its_read_limit(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, hook, client = receiver
    monkeypatch.setattr(receiver_module, "CALLBACK_READ_SECONDS", 0.2)
    answer = await client.post(rec.path, content=_stalled_body())
    assert answer.status_code == 408
    assert rec.counts["slow"] == 1
    assert hook.calls == []


@pytest.mark.anyio
async def test_receiver_close_refuses_bodies_still_being_read(
    receiver: tuple[CallbackReceiver, Hook, httpx.AsyncClient],
) -> None:
    """The run ending: a body that never ends is refused at once, not waited for."""
    rec, hook, client = receiver
    codes: list[int] = []
    assert hook.calls == []

    async def post() -> None:
        codes.append((await client.post(rec.path, content=_stalled_body())).status_code)

    async with anyio.create_task_group() as tg:
        tg.start_soon(post)

        async def reading() -> bool:
            return bool(rec._reading)

        await await_for(reading, within=5, what="the body being read")
        rec.close()
    assert codes == [503]
    assert rec.counts["unfinished"] == 1
    assert hook.calls == []


@pytest.mark.anyio
async def test_receiver_logs_refusals_as_counted_lines_at_powers_of_two() -> None:
    """One line per kind at its 1st, 2nd, 4th, 8th... refusal: a flood of forgeries costs a
    few lines; control characters of the reason are escaped (one line each)."""
    lines: list[str] = []
    rec = CallbackReceiver(Hook(set()), secret="s3cret-for-tests", log=lines.append)
    transport = httpx.ASGITransport(app=rec.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        for _ in range(9):
            assert (await client.post(rec.path, content=b"{garbage")).status_code == 400
        deep = b"[" * 1000 + b"]" * 1000
        assert (await client.post(rec.path, content=deep)).status_code == 400
    assert rec.counts["malformed"] == 10
    assert [line.rsplit("; ", 1)[1] for line in lines] == [
        f"{n} malformed so far" for n in (1, 2, 4, 8)
    ]
    assert all("\n" not in line and line.startswith("flux-pipeline: ") for line in lines)
