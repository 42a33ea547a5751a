"""Exactly once under real faults: one create per task, however the run is stopped or the
API misbehaves, and a run that cannot finish says so and ends.

Each test was written before its fix and reproduced the symptom it names (as a strict xfail
until the fix landed). Every run here is a ``flux-pipeline run`` subprocess against a
simulator (``support.quick_sim``: a thread in the test process, so it outlives the run and
lists every task it created) or a hostile proxy in front of one (``support.HostileProxy``),
over loopback HTTP. Waiting is on observables (simulator stats,
DB rows, a process's exit) with deadlines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from flux_pipeline.simulator import Faults

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    ambiguous_ids,
    claimed_created,
    clean_env,
    db_rows,
    dropped,
    lost_creates,
    quick_sim,
    roots_manifest,
    run_argv,
    sim_tasks,
    spawn_run,
    state_path,
    submitting,
    wait_for,
    write_manifest,
)

KEY = "once-key"
CREATE = "/api/v1/generateTask/flux-kontext"
ROOT = Path(__file__).resolve().parents[2]


def run_cmd(
    manifest: Path, out: Path, *extra: str, base_url: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(manifest, out, *extra),
        capture_output=True,
        text=True,
        env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=base_url),
        timeout=timeout,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- 1. two runs of one batch at once ----------------------------------------------------------


def test_two_runs_started_together_create_each_task_once(tmp_path: Path) -> None:
    """Both runs start at once against one simulator: one runs the batch, the other exits 2
    before sending anything, with one line naming the holder (pid, host, since). Every API
    answer is held 1 s after processing, so the batch takes seconds: the runs overlap."""
    manifest = write_manifest(tmp_path, roots_manifest("twice", 12))
    out = tmp_path / "out"
    with quick_sim(KEY, faults=Faults(slow_rate=1.0, slow_seconds=1.0)) as sim:
        runs = [
            spawn_run(manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path, tag=t)
            for t in ("first", "second")
        ]
        codes = [run.proc.wait(timeout=60) for run in runs]
        stats = sim.stats()
    assert stats["creates"] == 12, f"{stats['creates']} creates for 12 tasks, exits {codes}"
    assert stats["duplicate_creates"] == 0
    assert sorted(codes) == [0, 2], [run.output() for run in runs]
    holder, refused = (runs[0], runs[1]) if codes[0] == 0 else (runs[1], runs[0])
    lines = refused.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert str(holder.proc.pid) in lines[0]
    assert socket.gethostname() in lines[0]
    assert "since" in lines[0]


# --- 2. a stop leaves ambiguous only what reached the API --------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_leaves_ambiguous_only_creates_that_reached_the_api(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """200 tasks, a request budget of 600/min: most tasks wait for a budget token. Stopped
    once the first creates reached the simulator, the run may leave ambiguous (rows
    ``submitting``, as ``status --json`` lists them) at most the creates the API received
    whose taskId it did not record."""
    manifest = write_manifest(tmp_path, roots_manifest("budget", 200))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
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
            wait_for(lambda: sim.stats()["creates"] >= 3, timeout=30, what="the first creates")
            run.proc.send_signal(signum)
            code = run.proc.wait(timeout=30)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        lost = lost_creates(sim, out)
        creates = sim.stats()["creates"]
    left = submitting(out)
    listed = ambiguous_ids(out)
    assert code == 3, run.output()
    assert "Traceback" not in run.output()
    assert len(left) <= len(lost), (
        f"{len(left)} tasks left ambiguous, but the API received {creates} creates of which "
        f"{len(lost)} were not recorded"
    )
    assert len(listed) <= len(lost), listed


def test_a_stop_during_an_outage_leaves_nothing_ambiguous(tmp_path: Path) -> None:
    """The API refuses connections (nothing listens): no create can have reached it, so a
    SIGTERM must leave no task ambiguous."""
    manifest = write_manifest(tmp_path, roots_manifest("outage", 12))
    out = tmp_path / "out"
    run = spawn_run(
        manifest,
        out,
        base_url=f"http://127.0.0.1:{closed_port()}",
        api_key=KEY,
        logs=tmp_path,
        tag="run",
    )
    try:
        # its first line (progress or error) comes once it has been sending for a while
        wait_for(
            lambda: bool(db_rows(state_path(out))) and run.output().strip() != "",
            timeout=30,
            what="the run's first line",
        )
        run.proc.send_signal(signal.SIGTERM)
        code = run.proc.wait(timeout=30)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    assert code == 3, run.output()
    assert submitting(out) == []
    assert ambiguous_ids(out) == []
    assert {r.state for r in db_rows(state_path(out)).values()} == {"planned"}


# --- 3. ambiguous tasks end a run ------------------------------------------------------------


def test_a_run_left_with_only_ambiguous_tasks_ends_exit_1_and_says_what_resubmitting_costs(
    tmp_path: Path,
) -> None:
    """Two of 42 creates are dropped before the API processed them (what the simulator's
    ``drop_rate`` does, made deterministic by a proxy: the connection closes after headers,
    the API created nothing). A run whose only unfinished work is such held tasks ends exit 1
    (not the resumable 3: rerunning changes nothing) naming how many, which, and what
    ``--resubmit-ambiguous`` costs at most; a rerun exits 1 too, and with
    ``--resubmit-ambiguous`` the batch finishes exit 0."""
    manifest = write_manifest(tmp_path, roots_manifest("dropped", 42))
    out = tmp_path / "out"
    drop = {"subject number 7", "subject number 30"}

    def before(exchange: Exchange) -> Answer | None:
        if exchange.path == CREATE and exchange.json()["input"]["prompt"] in drop:
            drop.discard(exchange.json()["input"]["prompt"])  # the first time only
            return dropped()
        return None

    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, before=before) as proxy:
        first = run_cmd(manifest, out, base_url=proxy.base_url)
        held = ambiguous_ids(out)
        again = run_cmd(manifest, out, base_url=proxy.base_url)
        resubmitted = run_cmd(manifest, out, "--resubmit-ambiguous", base_url=proxy.base_url)
        creates = sim.stats()["creates"]
    text = first.stdout + first.stderr
    assert sorted(held) == ["shot@subject=number 30#1", "shot@subject=number 7#1"], text
    assert first.returncode == 1, text
    assert "--resubmit-ambiguous" in text
    assert "2 " in text
    assert all(readable_id in text for readable_id in held), text
    assert again.returncode == 1, again.stdout + again.stderr
    assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
    assert creates == 42


# --- 5. a gateway error after the create is not paid again -----------------------------------


def test_gateway_pages_after_the_create_do_not_pay_again(tmp_path: Path) -> None:
    """A proxy answers the first three creates with a 504 HTML page after the simulator
    created the task, then passes answers through. The task is created once (held ambiguous
    or resolved), and the run does not claim more created than taskIds it received."""
    manifest = write_manifest(tmp_path, roots_manifest("gateway", 1))
    out = tmp_path / "out"
    pages = {"left": 3}

    def rule(exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path == CREATE and pages["left"] > 0:
            pages["left"] -= 1
            return Answer.html(504)
        return answer

    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, rule) as proxy:
        result = run_cmd(manifest, out, base_url=proxy.base_url)
        creates = sim.stats()["creates"]
    text = result.stdout + result.stderr
    received = {r.task_id for r in db_rows(state_path(out)).values() if r.task_id}
    claimed = claimed_created(text)
    assert creates == 1, f"{creates} creates for 1 task; {len(proxy.requests_to(CREATE))} sent"
    assert claimed, text
    assert max(claimed) <= len(received), text


# --- 6. a read-only output directory ---------------------------------------------------------

READ_ONLY = [
    "unshare",
    "--mount",
    "--map-root-user",
    "sh",
    "-c",
    'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
    "sh",
]


def test_a_read_only_output_directory_creates_nothing(tmp_path: Path) -> None:
    """The output directory exists on a read-only mount: exit 2 with one line, before any
    create (today every task is created, billed, then the run crashes)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here: cannot mount a read-only directory")
    manifest = write_manifest(tmp_path, roots_manifest("frozen", 6))
    frozen = tmp_path / "frozen"
    out = frozen / "out"
    out.mkdir(parents=True)
    probe = subprocess.run(
        [*READ_ONLY, str(frozen), "touch", str(out / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount a read-only directory here: {probe.stderr.strip()}")
    with quick_sim(KEY) as sim:
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        result = subprocess.run(
            [*READ_ONLY, str(frozen), *run_argv(manifest, out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        creates = sim.stats()["creates"]
        tasks = sim_tasks(sim)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, lines
    assert creates == 0
    assert tasks == []
    assert len(lines) == 1, lines


def test_an_output_directory_under_a_regular_file_creates_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("file", 6))
    (tmp_path / "file").write_text("not a directory")
    with quick_sim(KEY) as sim:
        result = run_cmd(manifest, tmp_path / "file" / "out", base_url=sim.base_url)
        creates = sim.stats()["creates"]
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert creates == 0, lines
    assert result.returncode == 2, lines
    assert len(lines) == 1, lines
