"""Ambiguity that resolves itself in callback mode, against the simulator over HTTP.

Each task's callback URL ends in its key. ``lost_after_rate``: the API creates the task and
the answer is lost; its callback names the key, the run confirms the taskId with one status
call and carries on: 0 ambiguous, 0 duplicate creates. ``drop_rate``: the request is lost
before the API saw it; no callback ever comes, the task is held ambiguous once the wait is
over: exit 1 with the one message; ``--resubmit-ambiguous`` then finishes: exit 0.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

from flux_pipeline.run.receiver import MAX_KEY_CHARS, CallbackReceiver
from flux_pipeline.simulator import Faults, SimConfig, SimulatorThread

from .support import (
    admin_of,
    chained_manifest,
    check_outputs,
    clean_env,
    db_rows,
    run_argv,
    run_inprocess,
    settled_report,
    state_path,
    write_manifest,
)

KEY = "resolution-key"
SUBJECTS = ["fox", "owl", "bear", "hare", "wolf", "lynx"]
STYLES = ["ink", "oil"]
ROOTS = len(SUBJECTS) * len(STYLES)


@pytest.mark.anyio
async def test_lost_answers_are_resolved_by_their_callbacks(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("lost-after", SUBJECTS, STYLES))
    out = tmp_path / "out"
    config = SimConfig(
        api_keys=(KEY,), task_seconds=0.3, seed=7, faults=Faults(lost_after_rate=0.4)
    )
    with SimulatorThread(config) as sim:
        result = await run_inprocess(
            manifest, out, base_url=sim.base_url, api_key=KEY, request_type="callback"
        )
        stats = await admin_of(sim).astats()
        sim.set_faults(lost_after_rate=0.0)
        report = await settled_report(
            manifest, out, base_url=sim.base_url, api_key=KEY, code=0, request_type="callback"
        )
    outcome = result.outcome
    assert outcome.stats["resolved_by_callback"] >= 1, outcome  # some creates were lost
    assert outcome.exit_code == 0, outcome
    assert outcome.buckets.ambiguous == 0
    assert outcome.ambiguous == []
    assert outcome.created == 2 * ROOTS  # the resolved ones too: billed, once
    assert stats["creates"] == 2 * ROOTS
    assert stats["duplicate_creates"] == 0
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == 2 * ROOTS


@pytest.mark.anyio
async def test_requests_lost_before_the_api_are_held_then_resubmitted(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, chained_manifest("lost-before", SUBJECTS, STYLES, chained=False)
    )
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.3, seed=3, faults=Faults(drop_rate=0.3))
    with SimulatorThread(config) as sim:
        argv = run_argv(manifest, out, "--request-type", "callback")
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        held = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=120, check=False
            )
        )
        stats = await admin_of(sim).astats()
        ambiguous = sorted(
            r.readable_id for r in db_rows(state_path(out)).values() if r.state == "submitting"
        )
        sim.set_faults(drop_rate=0.0)
        again = await run_inprocess(
            manifest,
            out,
            base_url=sim.base_url,
            api_key=KEY,
            request_type="callback",
            resubmit_ambiguous=True,
        )
        after = await admin_of(sim).astats()

    assert ambiguous, held.stderr  # some creates were dropped (seeded)
    assert held.returncode == 1, held.stderr
    assert stats["creates"] == ROOTS - len(ambiguous)  # the dropped ones created nothing
    last = [line for line in held.stderr.splitlines() if "ambiguous task(s) held" in line]
    assert len(last) == 1, held.stderr
    assert f"{len(ambiguous)} ambiguous task(s) held" in last[0]
    assert ambiguous[0] in last[0]
    assert f"at most {len(ambiguous)} more task(s) billed" in last[0]
    assert "finished with failures" in held.stderr
    assert "resumable" not in held.stderr

    assert again.outcome.exit_code == 0, again.outcome
    assert again.outcome.created == len(ambiguous)
    assert after["creates"] == ROOTS
    assert after["duplicate_creates"] == 0


@pytest.mark.anyio
async def test_the_receiver_hands_the_key_of_the_url_to_the_engine() -> None:
    """``/callbacks/<secret>/<key>``: the key goes with the taskId; a wrong secret is 404
    with or without a key (compared in constant time); an oversized key is refused."""
    calls: list[tuple[str, str | None]] = []

    def confirm(task_id: str, key: str | None) -> bool:
        calls.append((task_id, key))
        return key == "k1"

    receiver = CallbackReceiver(confirm, secret="s3cret-for-tests")
    body = {"code": 200, "data": {"taskId": "task_1", "state": "success"}}
    transport = httpx.ASGITransport(app=receiver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        assert (await client.post(f"{receiver.path}/k1", json=body)).status_code == 200
        assert (await client.post(f"{receiver.path}/k2", json=body)).status_code == 200
        assert (await client.post(receiver.path, json=body)).status_code == 200
        for wrong in ("/callbacks/wrong/k1", "/callbacks/wrong"):
            assert (await client.post(wrong, json=body)).status_code == 404
        long_key = "k" * (MAX_KEY_CHARS + 1)
        assert (await client.post(f"{receiver.path}/{long_key}", json=body)).status_code == 400
    assert calls == [("task_1", "k1"), ("task_1", "k2"), ("task_1", None)]
    assert receiver.counts["accepted"] == 1
    assert receiver.counts["unknown task"] == 2
    assert receiver.counts["wrong secret"] == 2
