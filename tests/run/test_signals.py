"""Signals: SIGINT or SIGTERM to a running ``flux-pipeline run`` stops it with exit 3 within
5 s, with every task the API created recorded by taskId, and a resume finishes the batch
without creating anything twice.

The run is a subprocess (it gets the signal); the simulator is a ``SimulatorThread`` in the
test process, so the test can list every task it ever created.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from flux_pipeline.simulator import Faults, SimConfig, SimulatorThread

from .support import (
    admin_of,
    chained_manifest,
    check_outputs,
    db_rows,
    load_report,
    run_inprocess,
    settled_report,
    spawn_run,
    state_path,
    wait_for,
    write_manifest,
)

KEY = "signals-key"
SUBJECTS = ["fox", "owl", "bear", "hare"]
STYLES = ["ink", "oil", "pastel"]
ROOTS = len(SUBJECTS) * len(STYLES)
TASKS = 2 * ROOTS


@pytest.mark.anyio
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", ["creates-in-flight", "tasks-running"])
async def test_signal_stops_with_exit_3_and_loses_no_task(
    tmp_path: Path, signum: signal.Signals, moment: str
) -> None:
    """Every API answer is held back 1 s by the simulator (after processing); tasks take
    ~1.2 s and the run's first poll comes after 2 s, so they are all in flight.

    ``creates-in-flight``: the signal arrives while every create has been sent and none has
    been answered (all rows ``submitting``): the run must wait for their answers and record
    each taskId, or the resume would find ambiguous tasks. ``tasks-running``: every create
    was answered and the tasks are running at the API. Either way: exit 3 within 5 s, no row
    left ``submitting``, the DB's taskIds are exactly the simulator's tasks, and a resume
    ends exit 0 with ``creates == TASKS`` (no duplicate).
    """
    manifest = write_manifest(tmp_path, chained_manifest("signals", SUBJECTS, STYLES))
    out = tmp_path / "out"
    db = state_path(out)
    config = SimConfig(
        api_keys=(KEY,),
        task_seconds=1.2,
        task_spread=0.1,
        faults=Faults(slow_rate=1.0, slow_seconds=1.0),
    )
    with SimulatorThread(config) as sim:
        run = spawn_run(manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path, tag="run")
        try:
            wanted = "submitting" if moment == "creates-in-flight" else "submitted"

            def reached() -> bool:
                rows = db_rows(db)
                return len(rows) == ROOTS and {r.state for r in rows.values()} == {wanted}

            wait_for(reached, timeout=20, what=f"every root task {wanted}")
            sent = time.monotonic()
            run.proc.send_signal(signum)
            code = run.proc.wait(timeout=15)
            stopped_in = time.monotonic() - sent
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        output = run.output()
        rows = db_rows(db)
        created = set(sim.simulator.store.tasks)  # every task the API ever created
        print(
            f"\n{signum.name} ({moment}): exit {code} in {stopped_in:.2f}s, {len(created)} created"
        )

        assert code == 3, output
        assert stopped_in < 5.0, output
        assert f"{signum.name} received" in output
        assert "resumable" in output
        assert "Traceback" not in output
        assert "submitting" not in {r.state for r in rows.values()}, rows
        assert {r.task_id for r in rows.values()} == created
        assert len(created) == ROOTS  # nothing submitted after the signal
        assert load_report(out)["run"]["exit_code"] == 3

        sim.set_faults(slow_rate=0.0)
        result = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert result.outcome.exit_code == 0, result.outcome
        stats = await admin_of(sim).astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)

    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == TASKS
    assert stats["creates"] == TASKS
    assert stats["duplicate_creates"] == 0
