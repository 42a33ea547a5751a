"""Resume rules of docs/resume.md, end to end: ``--retry-failed``, ambiguous tasks held or
resubmitted, and a downloaded task whose file was deleted fetched again without a new create.

What a crash leaves behind is produced by editing the state DB between runs (a row forced
back to ``submitting`` is exactly what a kill between "submitting" and the taskId leaves).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    acli_json,
    admin_of,
    chained_manifest,
    check_outputs,
    db_execute,
    db_rows,
    lock_file,
    report_tasks,
    rewritten_report,
    run_inprocess,
    settled_report,
    sha256_of,
    state_path,
    write_manifest,
)

KEY = "resume-key"


@pytest.mark.anyio
async def test_retry_failed_resubmits_only_the_failed_tasks(tmp_path: Path) -> None:
    """Two of four tasks fail (CONTENT_VIOLATION). A plain rerun retries nothing (exit 1).
    ``--retry-failed`` against an API that now accepts them creates exactly those two
    (attempts 2), leaves the downloaded ones alone, and ends exit 0."""
    manifest = write_manifest(
        tmp_path, chained_manifest("retry", ["fox", "skull"], ["ink", "oil"], chained=False)
    )
    out = tmp_path / "out"
    strict = SimConfig(api_keys=(KEY,), task_seconds=0.2, block_words=("skull",))
    with SimulatorThread(strict) as sim:
        first = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        plain = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        strict_creates = (await admin_of(sim).astats())["creates"]
    assert first.outcome.exit_code == 1
    assert plain.outcome.exit_code == 1
    assert plain.outcome.created == 0
    assert strict_creates == 4
    failed = {rid for rid, t in report_tasks(out).items() if t["state"] == "failed"}
    assert failed == {"shot@subject=skull,style=ink#1", "shot@subject=skull,style=oil#1"}
    kept = {rid: t["outputs"] for rid, t in report_tasks(out).items() if rid not in failed}

    lenient = SimConfig(api_keys=(KEY,), task_seconds=0.2)  # the policy changed upstream
    with SimulatorThread(lenient) as sim:
        retried = await run_inprocess(
            manifest, out, base_url=sim.base_url, api_key=KEY, retry_failed=True
        )
        stats = await admin_of(sim).astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)
    assert retried.outcome.exit_code == 0, retried.outcome
    assert retried.outcome.created == 2
    assert stats["creates"] == 2
    tasks = {t["readable_id"]: t for t in report["tasks"]}
    assert {t["state"] for t in tasks.values()} == {"downloaded"}
    assert {rid: tasks[rid]["attempts"] for rid in failed} == dict.fromkeys(failed, 2)
    assert all(tasks[rid]["failCode"] is None for rid in failed)
    assert {rid: tasks[rid]["outputs"] for rid in kept} == kept
    assert check_outputs(out, report) == 4


@pytest.mark.anyio
async def test_ambiguous_tasks_are_held_then_resubmitted_on_request(tmp_path: Path) -> None:
    """A root and an edit left in ``submitting`` without a taskId. A plain rerun holds them:
    exit 1 (a rerun makes no progress), both listed (outcome, ``status --json``, report.md),
    nothing created. With
    ``--resubmit-ambiguous`` exactly those two are created again (attempts 2) and the run
    ends exit 0; the root's other edit is not redone."""
    manifest = write_manifest(tmp_path, chained_manifest("ambiguous", ["fox", "owl"], ["ink"]))
    out = tmp_path / "out"
    db = state_path(out)
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2)
    root, edit = "shot@subject=fox,style=ink#1", "shot@subject=owl,style=ink#1/edit#1"
    with SimulatorThread(config) as sim:
        admin = admin_of(sim)
        done = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert done.outcome.exit_code == 0
        changed = db_execute(
            db,
            "UPDATE tasks SET state = 'submitting', task_id = NULL, attempts = 1"
            " WHERE readable_id IN (?, ?)",
            (root, edit),
        )
        assert changed == 2
        lock_file(manifest).unlink()  # what such a crash leaves: no lock knows their taskIds

        held = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert held.outcome.exit_code == 1, held.outcome
        assert held.outcome.ambiguous == sorted([root, edit])
        assert held.outcome.created == 0
        assert (await admin.astats())["creates"] == 4
        status = await acli_json("status", "--json", "--state", str(db))
        assert sorted(status["ambiguous"]) == sorted([root, edit])
        assert report_tasks(out)[root]["state"] == "submitting"
        assert root in (out / "report.md").read_text()

        again = await run_inprocess(
            manifest, out, base_url=sim.base_url, api_key=KEY, resubmit_ambiguous=True
        )
        stats = await admin.astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)
    assert again.outcome.exit_code == 0, again.outcome
    assert again.outcome.created == 2
    assert stats["creates"] == 4 + 2
    assert stats["duplicate_creates"] == 2  # the forced rows had in fact been created: paid twice
    rows = {r.readable_id: r for r in db_rows(db).values()}
    assert {rid: r.attempts for rid, r in rows.items() if r.attempts > 1} == {root: 2, edit: 2}
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == 4


@pytest.mark.anyio
async def test_deleted_outputs_are_downloaded_again_without_a_new_create(tmp_path: Path) -> None:
    """A downloaded root and a downloaded edit lose their files: ``plan`` says "done but output
    missing"; the rerun downloads both again (same bytes), creates nothing, and the deleted
    root's edit is not redone."""
    manifest = write_manifest(tmp_path, chained_manifest("missing", ["fox", "owl"], ["ink"]))
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2)
    root, edit = "shot@subject=fox,style=ink#1", "shot@subject=owl,style=ink#1/edit#1"
    with SimulatorThread(config) as sim:
        admin = admin_of(sim)
        done = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert done.outcome.exit_code == 0
        before = {t["readable_id"]: t for t in (await rewritten_report(manifest, out))["tasks"]}
        paths = {rid: out / before[rid]["outputs"][0]["path"] for rid in (root, edit)}
        hashes = {rid: sha256_of(path) for rid, path in paths.items()}
        for path in paths.values():
            path.unlink()
        stats_before = await admin.astats()

        plan = await acli_json("plan", str(manifest), "--json", "--out", str(out))
        reasons = {t["readable_id"]: t["reason"] for t in plan["tasks"]}
        assert reasons[root] == reasons[edit] == "done but output missing"
        assert sorted(set(reasons.values())) == ["done", "done but output missing"]

        rerun = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        stats = await admin.astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)
    assert rerun.outcome.exit_code == 0, rerun.outcome
    assert rerun.outcome.created == 0
    assert stats["creates"] == stats_before["creates"] == 4
    calls, calls_before = stats["requests_by_endpoint"], stats_before["requests_by_endpoint"]
    assert calls["results"] - calls_before["results"] == 2
    assert calls.get("status") == calls_before.get("status")
    assert {rid: sha256_of(path) for rid, path in paths.items()} == hashes
    after = {t["readable_id"]: t["taskId"] for t in report["tasks"]}
    assert after == {rid: t["taskId"] for rid, t in before.items()}
    assert check_outputs(out, report) == 4
