"""A state DB or a disk in trouble ends the run by itself (docs/exit-codes.md): locked by
another process (at the start: exit 2; for 10 s mid-run: ridden out), read-only, a bad row, a
full disk, a file size limit hit mid-run. CLI end to end under the watchdog.
"""

from __future__ import annotations

import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    db_execute,
    quick_sim,
    roots_manifest,
    run_argv,
    sim_tasks,
    state_path,
    wait_for,
    write_manifest,
)
from .watchdog import bounded, env_with

KEY = "no-hang-store"


@contextmanager
def locked(db: Path, *, seconds: float | None = None) -> Iterator[threading.Event]:
    """Another process holding the state DB's write lock (for ``seconds``, or the block)."""
    hold = "import time; time.sleep(float(sys.argv[2]))" if seconds else "sys.stdin.read()"
    code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); " + hold
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(seconds or 0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    released = threading.Event()
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield released
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        proc.stdout.close()
        released.set()


def first_run(tmp_path: Path, sim_url: str, count: int = 2) -> tuple[Path, Path]:
    manifest = write_manifest(tmp_path, roots_manifest("store", count))
    out = tmp_path / "out"
    ran = bounded(run_argv(manifest, out), env=env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim_url))
    assert ran.code == 0, ran.lines
    return manifest, out


def test_a_state_db_locked_at_the_start_is_refused_in_seconds(tmp_path: Path) -> None:
    with quick_sim(KEY) as sim:
        manifest, out = first_run(tmp_path, sim.base_url)
        (out / "report.json").unlink()
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        with locked(state_path(out)):
            ended = bounded(run_argv(manifest, out), env=env)
    assert ended.code == 2, ended.lines
    assert len(ended.lines) == 1, ended.lines
    assert "another process holds the state DB" in ended.lines[0], ended.lines


def test_a_lock_held_10_s_mid_run_only_delays_the_run(tmp_path: Path) -> None:
    """The lock is taken once the first task was created and held 10 s: the run waits for
    it (the writer waits up to 30 s) and finishes every task, exit 0."""
    manifest = write_manifest(tmp_path, roots_manifest("midlock", 4))
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=2.0)) as sim:
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        result: list[object] = []
        runner = threading.Thread(
            target=lambda: result.append(bounded(run_argv(manifest, out), env=env, within=90))
        )
        runner.start()
        wait_for(lambda: len(sim_tasks(sim)) >= 1, timeout=60, what="the first create")
        with locked(state_path(out), seconds=10):
            pass
        runner.join(timeout=120)
    assert result, "the run did not end"
    ended = result[0]
    assert getattr(ended, "code", None) == 0, getattr(ended, "lines", ended)
    assert {r[0] for r in sqlite3.connect(state_path(out)).execute("SELECT state FROM tasks")} == {
        "downloaded"
    }


def test_a_bad_row_is_one_line_naming_the_task(tmp_path: Path) -> None:
    with quick_sim(KEY) as sim:
        manifest, out = first_run(tmp_path, sim.base_url, count=1)
        db_execute(state_path(out), "UPDATE tasks SET state = 'bogus'")
        ended = bounded(
            run_argv(manifest, out), env=env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        )
    assert ended.code == 2, ended.lines
    assert len(ended.lines) == 1, ended.lines
    assert "the state DB has a bad row for task" in ended.lines[0]
    assert "'bogus' is not a valid TaskState" in ended.lines[0]


READ_ONLY = [
    "unshare",
    "--mount",
    "--map-root-user",
    "sh",
    "-c",
    'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
    "sh",
]
TMPFS = [
    "unshare",
    "--mount",
    "--map-root-user",
    "sh",
    "-c",
    'mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@"',
    "sh",
]


def _can(prefix: list[str], target: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*prefix, str(target), "true"], capture_output=True, check=False)
    return probe.returncode == 0


def test_a_read_only_state_db_is_refused_before_any_create(tmp_path: Path) -> None:
    with quick_sim(KEY) as sim:
        manifest, out = first_run(tmp_path, sim.base_url, count=1)
        (out / "report.json").unlink()
        db = state_path(out)
        if not _can(READ_ONLY, db):
            pytest.skip("cannot mount a read-only file here (no unshare)")
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        ended = bounded([*READ_ONLY, str(db), *run_argv(manifest, out)], env=env)
    assert ended.code == 2, ended.lines
    assert len(ended.lines) == 1, ended.lines
    assert "state DB" in ended.lines[0]
    assert "Read-only file system" in ended.lines[0]


def test_a_full_disk_is_refused_before_any_create(tmp_path: Path) -> None:
    """The output directory is a 2 MB tmpfs: one line, exit 2, nothing created."""
    manifest = write_manifest(tmp_path, roots_manifest("full", 2))
    small = tmp_path / "small"
    small.mkdir()
    if not _can(TMPFS, small):
        pytest.skip("cannot mount a tmpfs here (no unshare)")
    with quick_sim(KEY) as sim:
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        ended = bounded([*TMPFS, str(small), *run_argv(manifest, small / "out")], env=env)
        created = len(sim_tasks(sim))
    assert ended.code == 2, ended.lines
    assert len(ended.lines) == 1, ended.lines
    assert "free on its file system" in ended.lines[0], ended.lines
    assert created == 0


def _file_size_limit(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_writes_failing_mid_run_end_the_run_with_the_real_error(tmp_path: Path) -> None:
    """A file size limit the state DB outgrows mid-run (as a disk filling up would): the run
    ends by itself, resumable (3), naming SQLite's own error, not a failed rollback; the rerun
    without the limit finishes."""
    manifest = write_manifest(tmp_path, roots_manifest("efbig", 6))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        ended = bounded(
            run_argv(manifest, out), env=env, preexec_fn=lambda: _file_size_limit(70_000)
        )
        again = bounded(run_argv(manifest, out), env=env)
    text = "\n".join(ended.lines)
    # 3: writes not stored, a rerun redoes them; 2: a taskId not stored stopped the run
    assert ended.code in (2, 3), ended.lines
    assert "disk I/O error" in text, ended.lines
    assert "cannot rollback" not in text
    assert "internal error" not in text
    if "could not store taskId" in text:
        # the limit hit a taskId's write: that create is billed and its taskId is only in the
        # message, so the rerun holds it as ambiguous (exit 1, docs/exit-codes.md), never new
        assert ended.code == 2, ended.lines
        assert again.code == 1, again.lines
        assert "ambiguous" in "\n".join(again.lines), again.lines
    else:
        assert again.code == 0, again.lines
