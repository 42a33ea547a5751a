"""Crash and resume: ``kill -9`` a run at random moments, resume until done, pay once.

The run is a subprocess (``python -m flux_pipeline run``); the simulator is another one, so it
outlives every kill and keeps the whole history of what was created.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from .support import (
    SimProcess,
    check_outputs,
    cli_json,
    db_rows,
    image_files,
    leftovers,
    load_report,
    spawn_run,
    state_path,
    write_manifest,
)

KEY = "crash-test-key"
SUBJECTS = ["fox", "owl", "bear", "hare", "wolf", "lynx"]
STYLES = ["ink", "oil", "pastel", "pixel"]
TASKS = len(SUBJECTS) * len(STYLES) * 2  # shots, then one chained edit of each
MIN_KILLS = 12
SEED = 20240604

MANIFEST = f"""\
version: 1
name: crash
defaults:
  input: {{mode: pro, aspect_ratio: "1:1", output_format: png}}
steps:
  - id: shot
    matrix:
      subject: {SUBJECTS}
      style: {STYLES}
    prompt: "a {{{{ subject }}}} drawn in {{{{ style }}}} style"
  - id: edit
    from: shot
    prompt: "give the {{{{ parent.subject }}}} a red scarf"
"""


@pytest.mark.slow
@pytest.mark.timeout(110)
def test_kill_9_at_random_moments_then_resume_pays_once(tmp_path: Path) -> None:
    """At least 12 ``kill -9`` at seeded random moments, resuming each time, then runs to the
    end: every task downloaded exactly once, every file's SHA-256 the report's.

    Accounting of ambiguity (the heart of "exactly once"). Every resume runs with
    ``--resubmit-ambiguous``. Before each run the test reads the state DB and records every
    row left in ``submitting`` as an *episode* ``(key, attempts)``: a create whose answer the
    killed run never recorded. ``flux-pipeline status --json`` must list exactly those tasks
    as ambiguous. A resume resubmits each such task once (its ``attempts`` goes up by one), so

    - ``sum(attempts - 1) == episodes``: nothing but ambiguous tasks is ever resubmitted
      (a task with a taskId is polled, never created again);
    - the simulator's ``distinct_inputs == TASKS`` and ``creates == TASKS + duplicates``:
      every extra create is a second create of a planned task, nothing else was created;
    - ``duplicate_creates <= episodes``: a duplicate is a create the API processed whose
      answer the engine lost, which leaves the row in ``submitting`` at the kill, i.e. an
      episode. Equality is NOT an invariant: a kill after ``submitting`` is durable but before
      the create reaches the API is an episode without a duplicate (the design writes
      ``submitting`` first precisely so that this case errs on the side of asking). A create
      sent before ``submitting`` was durable would show up as ``duplicates > episodes``.

    To make lost answers likely, half of the API answers are slowed by 0.3 s *after* the
    simulator processed the request (a create has then created its task), and ``--max-active
    4`` spreads creates over the whole batch. The seeded kill delays are the test's one
    intended sleep.
    """
    manifest = write_manifest(tmp_path, MANIFEST)
    out = tmp_path / "out"
    logs = tmp_path / "logs"
    db = state_path(out)
    rng = random.Random(SEED)
    sim_args = (
        "--api-key",
        KEY,
        "--task-seconds",
        "0.5",
        "--task-spread",
        "0.15",
        "--slow-rate",
        "0.5",
        "--slow-seconds",
        "0.3",
        "--seed",
        "7",
    )
    episodes: set[tuple[str, int]] = set()
    kills = runs = 0

    def observe() -> None:
        rows = db_rows(db)
        submitting = {r for r in rows.values() if r.state == "submitting"}
        episodes.update((r.key, r.attempts) for r in submitting)
        if rows:
            status = cli_json("status", "--json", "--state", str(db))
            assert sorted(status["ambiguous"]) == sorted(r.readable_id for r in submitting)

    with SimProcess(tmp_path, *sim_args) as sim:

        def start() -> subprocess.Popen[bytes]:
            nonlocal runs
            runs += 1
            return spawn_run(
                manifest,
                out,
                "--resubmit-ambiguous",
                "--max-active",
                "4",
                base_url=sim.base_url,
                api_key=KEY,
                logs=logs,
                tag=f"run{runs}",
            ).proc

        while kills < MIN_KILLS:
            observe()
            proc = start()
            try:
                code = proc.wait(timeout=rng.uniform(0.3, 2.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                kills += 1
                continue
            pytest.fail(
                f"run {runs} ended by itself (exit {code}) after only {kills} kills: "
                f"{(logs / f'run{runs}.stderr').read_text()}"
            )

        observe()
        proc = start()
        assert proc.wait(timeout=60) == 0, (logs / f"run{runs}.stderr").read_text()
        observe()
        stats = sim.stats()

        # one more run: nothing to do, nothing created
        proc = start()
        assert proc.wait(timeout=60) == 0, (logs / f"run{runs}.stderr").read_text()
        again = sim.stats()
        assert again["creates"] == stats["creates"]
        assert "0 task(s) created" in (logs / f"run{runs}.stderr").read_text()

        report = load_report(out)
        rows = db_rows(db)
        sim_tasks = {t["taskId"]: sim.task(t["taskId"]) for t in report["tasks"]}

    duplicates = stats["duplicate_creates"]
    resubmitted = sum(r.attempts - 1 for r in rows.values())
    stray = leftovers(out)  # temp files of downloads cut by kill -9: reported, not asserted
    print(
        f"\ncrash/resume: {kills} kills in {runs} runs, {len(episodes)} ambiguous, "
        f"{resubmitted} resubmitted, {duplicates} duplicate creates, "
        f"{stats['creates']} creates for {TASKS} tasks, {len(stray)} stray temp files"
    )

    # every task downloaded exactly once, files intact
    assert len(report["tasks"]) == TASKS
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert report["counts"]["downloaded"] == TASKS
    assert check_outputs(out, report) == TASKS
    assert len(image_files(out)) == TASKS, image_files(out)

    # what was paid: only ambiguous tasks twice, and only if their first create got through
    assert stats["distinct_inputs"] == TASKS
    assert stats["creates"] == TASKS + duplicates
    assert resubmitted == len(episodes)
    assert duplicates <= len(episodes)

    # every recorded taskId is a distinct simulator task holding that very request
    assert len(sim_tasks) == TASKS
    for task in report["tasks"]:
        seen = sim_tasks[task["taskId"]]
        assert seen["state"] == "success"
        assert seen["request"]["input"] == task["request"]["input"], task["readable_id"]
        assert rows[task["key"]].attempts == task["attempts"]
