"""``run --simulate`` resumes like the real API: the built-in simulator keeps its tasks, credits
and result images from one run to the next for the same state DB (docs/simulator.md).

Each test reproduced its symptom before the fix: in-flight tasks ending ``TASK_NOT_FOUND``
after a stop and a rerun, and chained steps (changed, or ``--retry-failed``) failing
``INVALID_IMAGE_URL`` because their parents' URLs pointed at the previous run's simulator.
Every run is a ``flux-pipeline run --simulate`` subprocess; waiting is on DB rows and exits.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from flux_pipeline.simulator.persist import StateFile

from .support import clean_env, db_execute, db_rows, run_argv, spawn_run, state_path, wait_for

ROOT = Path(__file__).resolve().parents[2]


def demo_copy(tmp_path: Path) -> Path:
    """pipelines/demo.yaml with its reference images, in a directory of its own."""
    target = tmp_path / "project"
    target.mkdir()
    shutil.copy(ROOT / "pipelines" / "demo.yaml", target / "demo.yaml")
    shutil.copytree(ROOT / "pipelines" / "demo", target / "demo")
    return target / "demo.yaml"


def simulate(
    manifest: Path, out: Path, *extra: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(manifest, out, "--simulate", *extra),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=timeout,
        check=False,
    )


def sim_state(out: Path) -> Path:
    return out / ".flux-pipeline" / "state.simulator.db"


def saved_creates(out: Path) -> int:
    saved = StateFile.load(sim_state(out))
    assert saved is not None
    creates = saved.stats["creates"]
    assert isinstance(creates, int)
    return creates


def task_ids(out: Path) -> dict[str, str]:
    return {k: r.task_id for k, r in db_rows(state_path(out)).items() if r.task_id}


def test_a_stopped_simulated_run_resumes_its_tasks_without_new_creates(tmp_path: Path) -> None:
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out"
    run = spawn_run(
        manifest,
        out,
        "--simulate",
        "--sim-task-seconds",
        "4",
        base_url="",
        api_key="",
        logs=tmp_path,
        tag="first",
        env=clean_env(),
    )
    try:
        wait_for(
            lambda: any(r.state == "submitted" for r in db_rows(state_path(out)).values()),
            timeout=60,
            what="a task in flight",
        )
        run.proc.send_signal(signal.SIGINT)
        assert run.proc.wait(timeout=60) == 3, run.output()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    before = task_ids(out)
    assert before, run.output()
    in_flight = {k for k, r in db_rows(state_path(out)).items() if r.state == "submitted"}
    assert in_flight
    assert saved_creates(out) == len(before)

    second = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert second.returncode == 0, second.stderr
    assert "TASK_NOT_FOUND" not in second.stderr
    after = task_ids(out)
    assert {k: after[k] for k in before} == before  # no task that had a taskId was created again
    rows = db_rows(state_path(out))
    assert all(r.state == "downloaded" for r in rows.values()), rows
    assert all(rows[k].attempts == 1 for k in before)
    assert saved_creates(out) == len(after) == 8


def test_a_changed_chained_prompt_reuses_the_earlier_parents(tmp_path: Path) -> None:
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out"
    first = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert first.returncode == 0, first.stderr
    rows = db_rows(state_path(out))
    heroes = {k: v for k, v in task_ids(out).items() if "/banner" not in rows[k].readable_id}
    assert len(heroes) == 4
    manifest.write_text(
        manifest.read_text().replace("wide web banner", "tall poster banner"), encoding="utf-8"
    )
    second = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert second.returncode == 0, second.stderr
    assert "INVALID_IMAGE_URL" not in second.stderr
    rows = db_rows(state_path(out))
    assert sum(1 for r in rows.values() if "/banner" in r.readable_id) == 8  # 4 old, 4 new
    assert {k: task_ids(out)[k] for k in heroes} == heroes  # the heroes were not made again
    assert saved_creates(out) == 12


def test_retry_failed_works_across_simulated_runs(tmp_path: Path) -> None:
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out"
    first = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert first.returncode == 0, first.stderr
    changed = db_execute(
        state_path(out),
        "UPDATE tasks SET state = 'failed', fail_code = 'INTERNAL_ERROR', fail_msg = 'boom'"
        " WHERE readable_id LIKE '%/banner#%'",
    )
    assert changed == 4
    # a real failure is in the lock file too; this one was made in the DB alone, and the lock
    # (which knows the banners done) would win over a DB behind it (docs/lockfile.md)
    manifest.with_suffix(".lock.json").unlink()
    held = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert held.returncode == 1, held.stderr
    retried = simulate(manifest, out, "--sim-task-seconds", "0.3", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "INVALID_IMAGE_URL" not in retried.stderr
    rows = db_rows(state_path(out))
    assert all(r.state == "downloaded" for r in rows.values()), rows
    assert saved_creates(out) == 12


def test_a_taken_port_moves_the_simulator_and_old_references_still_work(tmp_path: Path) -> None:
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out"
    first = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert first.returncode == 0, first.stderr
    saved = StateFile.load(sim_state(out))
    assert saved is not None
    assert saved.port
    manifest.write_text(
        manifest.read_text().replace("wide web banner", "tall poster banner"), encoding="utf-8"
    )
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", saved.port))
        squatter.listen(1)
        second = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert second.returncode == 0, second.stderr
    moved = [line for line in second.stderr.splitlines() if f"port {saved.port}" in line]
    assert len(moved) == 1, second.stderr
    assert "taken" in moved[0]


def test_a_malformed_simulator_state_is_one_line_and_a_fresh_start(tmp_path: Path) -> None:
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out"
    sim_state(out).parent.mkdir(parents=True)
    sim_state(out).write_bytes(b"this is not a simulator state\n" * 40)
    run = simulate(manifest, out, "--sim-task-seconds", "0.3")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "simulator state" in line]
    assert len(lines) == 1, run.stderr
    assert "starts afresh" in lines[0]
    assert saved_creates(out) == 8
