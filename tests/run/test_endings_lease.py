"""Check before paying, one run per state: two real ``flux-pipeline run`` processes of the same
command against one simulator. The second exits 2 at once, naming the first (its pid), having
sent nothing; the first finishes: creates at the API == tasks. ``report`` and ``merge`` are
refused too while the lease is held. A read-only output directory fails the run with
exit 2 before anything is created.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flux_pipeline.run.lease import hold_lease
from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    chained_manifest,
    clean_env,
    db_rows,
    run_argv,
    spawn_run,
    state_path,
    wait_for,
    write_manifest,
)

KEY = "lease-key"
SUBJECTS = ["fox", "owl", "bear", "hare"]
STYLES = ["ink", "oil"]
TASKS = 2 * len(SUBJECTS) * len(STYLES)


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_run_of_the_same_state_exits_2_naming_the_first(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("lease", SUBJECTS, STYLES))
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=5.0, task_spread=0.0)  # still running
    with SimulatorThread(config) as sim:
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        first = spawn_run(manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path, tag="a")
        try:
            wait_for(lambda: sim.stats()["creates"] > 0, timeout=30, what="the first run's creates")
            creates_before = sim.stats()["creates"]
            second = subprocess.run(
                run_argv(manifest, out),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            refused_creates = sim.stats()["creates"]
            code = first.proc.wait(timeout=60)
        finally:
            if first.proc.poll() is None:
                first.proc.kill()
                first.proc.wait()
        stats = sim.stats()

    assert second.returncode == 2, second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    assert "in use by another flux-pipeline run" in second.stderr
    assert KEY not in second.stderr
    assert "Traceback" not in second.stderr
    assert refused_creates >= creates_before  # the first run went on meanwhile
    assert code == 0, first.output()
    assert stats["creates"] == TASKS
    assert stats["duplicate_creates"] == 0
    assert {r.state for r in db_rows(state_path(out)).values()} == {"downloaded"}


def test_report_and_merge_are_refused_while_a_run_holds_the_lease(tmp_path: Path) -> None:
    """While a run holds the lease (here: this process, as a run would), ``report`` and
    ``merge`` exit 2 naming the holder and write nothing; once it is released they work."""
    manifest = write_manifest(tmp_path, chained_manifest("held", SUBJECTS, STYLES))
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.2)) as sim:
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        done = subprocess.run(
            run_argv(manifest, out), env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
    report_json = out / "report.json"
    before = report_json.read_bytes()
    state = state_path(out)
    commands = (
        ("report", str(manifest), "--out", str(out)),
        ("merge", str(manifest), "--from", str(out), "--out", str(out)),
    )
    with hold_lease(state, out, command="flux-pipeline run held.yaml"):
        refused = [_cli(*argv, env=env) for argv in commands]
    for result in refused:
        assert result.returncode == 2, result.stderr
        assert f"pid {os.getpid()}" in result.stderr
        assert "flux-pipeline run held.yaml" in result.stderr
    assert report_json.read_bytes() == before
    assert [_cli(*argv, env=env).returncode for argv in commands] == [0, 0]


def test_an_unwritable_output_directory_fails_before_any_create(tmp_path: Path) -> None:
    """The output directory's path runs through a file: exit 2 naming it, nothing created."""
    manifest = write_manifest(tmp_path, chained_manifest("unwritable", SUBJECTS, STYLES))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.2)) as sim:
        result = subprocess.run(
            run_argv(manifest, blocker / "out"),
            env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        stats = sim.stats()
    assert result.returncode == 2, result.stderr
    assert "output directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert stats["creates"] == 0
    assert sum(stats["requests_by_endpoint"].values()) == 0  # not even a status call
