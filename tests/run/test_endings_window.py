"""The ambiguity window at its minimum, end to end: ``flux-pipeline run`` of 200 tasks with
``--rpm 600`` (most creates wait for a request-budget token), SIGINT after the first creates.
Only creates that really reached the API may be left ambiguous: at most as many rows are
``submitting`` as the simulator created tasks whose taskId the state DB does not know, the
rest of the never-sent tasks are planned, and the run's last line counts as created (billed)
exactly the taskIds it recorded.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import chained_manifest, db_rows, spawn_run, state_path, wait_for, write_manifest

KEY = "window-key"
SUBJECTS = [f"s{i:02d}" for i in range(20)]
STYLES = [f"t{i}" for i in range(10)]
TASKS = len(SUBJECTS) * len(STYLES)


def test_sigint_while_creates_wait_for_budget_leaves_only_sent_creates_ambiguous(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("window", SUBJECTS, STYLES, chained=False))
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=30.0)
    with SimulatorThread(config) as sim:
        run = spawn_run(
            manifest,
            out,
            "--rpm",
            "600",
            base_url=sim.base_url,
            api_key=KEY,
            logs=tmp_path,
            tag="run",
        )
        try:
            wait_for(lambda: sim.stats()["creates"] >= 5, timeout=30, what="the first creates")
            run.proc.send_signal(signal.SIGINT)
            code = run.proc.wait(timeout=20)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        created = set(sim.simulator.store.tasks)  # every task the API ever created
    output = run.output()
    rows = db_rows(state_path(out))
    recorded = {r.task_id for r in rows.values() if r.task_id}
    ambiguous = [r for r in rows.values() if r.state == "submitting"]
    planned = TASKS - len(rows) + sum(1 for r in rows.values() if r.state == "planned")
    print(
        f"\n{len(created)} created at the API, {len(recorded)} recorded, "
        f"{len(ambiguous)} ambiguous, {planned} planned, exit {code}"
    )

    assert code == 3, output
    assert len(created) < TASKS  # most were still waiting for a token
    assert len(ambiguous) <= len(created - recorded), output
    assert recorded <= created
    assert planned == TASKS - len(recorded) - len(ambiguous)
    summary = re.search(r"; (\d+) task\(s\) created \(billed\)", output)
    assert summary is not None, output
    assert int(summary.group(1)) == len(recorded)
