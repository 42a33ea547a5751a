"""A signal while the reports are being written (docs/exit-codes.md): SIGINT and SIGTERM
both exit 3 within 5 s (never 143, never a hang), with the reports whole and the state DB
closed. The rerun's report is rewritten (report.json removed), and the signal is sent the
moment report.json is in place: the other report files are still to be written, or the run
is closing.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from .support import quick_sim, roots_manifest, spawn_run, state_path, wait_for, write_manifest
from .watchdog import bounded, env_with

KEY = "no-hang-signals"
TASKS = 300


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_writing_the_reports_exits_3(tmp_path: Path, signum: int) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("reporting", TASKS))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        first = bounded([*spawn_argv(manifest, out)], env=env, within=180)
        assert first.code == 0, first.lines
        (out / "report.json").unlink()
        run = spawn_run(
            manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path, tag="again", env=env
        )
        try:
            wait_for(
                lambda: (out / "report.json").exists() or run.proc.poll() is not None,
                timeout=120,
                what="report.json to be written again",
                interval=0.002,
            )
            run.proc.send_signal(signum)
            code: int | None = run.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    assert code == 3, f"exit {code}: {run.output()}"
    assert "Traceback" not in run.output()
    report = json.loads((out / "report.json").read_text())
    assert len(report["tasks"]) == TASKS
    for name in ("report.md", "index.html", "junit.xml"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.part")), "a report left half written"
    assert not Path(f"{state_path(out)}-wal").exists() or _wal_empty(state_path(out))


def spawn_argv(manifest: Path, out: Path) -> list[str]:
    from .support import run_argv

    return run_argv(manifest, out)


def _wal_empty(db: Path) -> bool:
    """A state DB closed cleanly leaves no write-ahead log to replay."""
    return Path(f"{db}-wal").stat().st_size == 0
