"""Faults: 5xx, dropped connections, truncated downloads, a 429 burst and errors answered with
HTTP 200, all at once; the run still ends with exit 0 and every task correct.

The simulator is a ``SimulatorThread`` on a loopback port; the run is in-process
(``runner.execute``), so everything goes over real HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from flux_pipeline.simulator import Faults, SimConfig, SimulatorThread

from .support import (
    admin_of,
    await_for,
    chained_manifest,
    check_outputs,
    db_rows,
    image_files,
    leftovers,
    run_inprocess,
    settled_report,
    state_path,
    write_manifest,
)

KEY = "faults-key"
CREATE = "/api/v1/generateTask/flux-kontext"
SUBJECTS = ["fox", "owl", "bear", "hare", "wolf"]
STYLES = ["ink", "oil", "pastel", "pixel"]


async def run_until_done(
    manifest: Path, out: Path, base_url: str, *, max_runs: int = 4
) -> tuple[list[int], list[str]]:
    """Resume (with ``--resubmit-ambiguous``) until exit 0; the exit codes and output."""
    codes: list[int] = []
    lines: list[str] = []
    for _ in range(max_runs):
        result = await run_inprocess(
            manifest, out, base_url=base_url, api_key=KEY, lines=lines, resubmit_ambiguous=True
        )
        codes.append(result.outcome.exit_code)
        if result.outcome.exit_code == 0:
            return codes, lines
        # only "held ambiguous after repeated drops" (exit 1: nothing else is wrong) or
        # "downloads to retry" (exit 3) may stop a run here
        buckets = result.outcome.buckets
        if result.outcome.exit_code == 1:
            assert buckets.ambiguous > 0, (codes, result.outcome)
            assert buckets.failed == buckets.expired == 0, (codes, result.outcome)
        else:
            assert result.outcome.exit_code == 3, (codes, result.outcome)
    raise AssertionError(f"no clean run in {max_runs}: {codes}")


def assert_all_done(out: Path, report: dict[str, Any], tasks: int) -> None:
    assert len(report["tasks"]) == tasks
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == tasks
    assert len(image_files(out)) == tasks
    assert leftovers(out) == []


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("drop_after", [True, False], ids=["drop-after-create", "drop-before"])
async def test_every_fault_at_once_ends_exit_0_and_pays_only_for_drops(
    tmp_path: Path, drop_after: bool
) -> None:
    """On a manifest with a chained step, all at once: 10% 5xx, 10% dropped connections,
    30% truncated result downloads (full Content-Length advertised, half sent, closed), a
    burst of 15 429s, and every API error answered with HTTP 200 (code in the body).
    The run ends exit 0 (possibly after resumes), every file whole (hash = report, a valid
    image), no partial file left behind.

    A create whose connection drops is ambiguous by design, so the run uses
    ``--resubmit-ambiguous``. The two drop modes then pin the cost exactly:
    with ``drop_after`` the simulator processes the request before dropping it, so every
    resubmission of an ambiguous create is a duplicate (``duplicates == sum(attempts - 1)``);
    without it the create never happened, so resubmissions are free (``duplicates == 0``).
    5xx and 429 answers have no side effect and must never cause a duplicate.
    """
    manifest = write_manifest(tmp_path, chained_manifest("faults", SUBJECTS, STYLES))
    out = tmp_path / "out"
    tasks = len(SUBJECTS) * len(STYLES) * 2
    faults = Faults(
        error_rate=0.1,
        drop_rate=0.1,
        drop_after=drop_after,
        truncate_rate=0.3,
        rate_limit_burst=15,
        errors_as_200=True,
    )
    config = SimConfig(api_keys=(KEY,), task_seconds=0.4, task_spread=0.1, faults=faults, seed=3)
    with SimulatorThread(config) as sim:
        codes, _ = await run_until_done(manifest, out, sim.base_url)
        stats = await admin_of(sim).astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)

    assert_all_done(out, report, tasks)
    rows = db_rows(state_path(out))
    resubmitted = sum(r.attempts - 1 for r in rows.values())
    duplicates = stats["duplicate_creates"]
    print(
        f"\nfaults (drop_after={drop_after}): {tasks} tasks, runs {codes}, "
        f"{stats['server_errors']} 5xx, {stats['drops']} drops, "
        f"{stats['truncated']} truncated of {stats['requests_by_endpoint'].get('results')} "
        f"downloads, {stats['rate_limited']} 429s, {resubmitted} ambiguous resubmissions, "
        f"{duplicates} duplicate creates, {stats['creates']} creates"
    )
    # the faults really happened (answers were HTTP 200 with the error code in the body)
    assert stats["server_errors"] > 0
    assert stats["drops"] > 0
    assert stats["truncated"] > 0
    assert stats["rate_limited"] >= 15
    assert stats["faults"]["rate_limit_burst"] == 0
    assert {"429", "500"} & set(stats["responses_by_code"])
    # exactly once, except what drops make ambiguous
    assert stats["distinct_inputs"] == tasks
    assert stats["creates"] == tasks + duplicates
    assert duplicates == (resubmitted if drop_after else 0)
    assert sum(t["attempts"] for t in report["tasks"]) == tasks + resubmitted


@pytest.mark.anyio
async def test_simulator_reference_fetch_is_not_truncated() -> None:
    """A chained edit's reference image is the parent's result URL on the simulator itself.
    The truncation fault is meant for the client's downloads; with it at 100% the
    simulator's own fetch of that URL must still succeed and so must the edit (this was a
    simulator bug, fixed in a36138a; the test above relies on it)."""
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, task_spread=0.0)
    auth = {"Authorization": f"Bearer {KEY}"}
    with SimulatorThread(config) as sim:
        admin = admin_of(sim)
        async with httpx.AsyncClient(base_url=sim.base_url, trust_env=False) as client:

            async def create(payload: dict[str, Any]) -> str:
                answer = await client.post(CREATE, json={"input": payload}, headers=auth)
                task_id: str = answer.json()["data"]["taskId"]
                return task_id

            async def finished(task_id: str) -> dict[str, Any]:
                async def done() -> bool:
                    view = await admin.atask(task_id)
                    return view["state"] in ("success", "failed")

                await await_for(done, within=10, what=f"{task_id} to finish")
                return await admin.atask(task_id)

            parent = await finished(await create({"prompt": "a parent image"}))
            url = json.loads(parent["status"]["resultJson"])["resultUrls"][0]
            await anyio.to_thread.run_sync(lambda: admin.set_faults(truncate_rate=1.0))
            child = await finished(await create({"prompt": "edit it", "image_urls": [url]}))
    assert child["status"].get("failCode") is None, child
    assert child["state"] == "success"
