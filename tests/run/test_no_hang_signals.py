"""Signals while the manifest is planned and while the reports are written
(docs/exit-codes.md).

While a 100,000-task manifest is planned, SIGINT and SIGTERM exit 3 at once with nothing
opened (before: SIGINT had started the simulator and the state DB; SIGTERM killed the run,
-15). While the reports are being written, SIGINT and SIGTERM
both exit 3 within 5 s (never 143, never a hang), with the reports whole and the state DB
closed. The rerun's report is rewritten (report.json removed), and the signal is sent the
moment report.json is in place: the other report files are still to be written, or the run
is closing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux ``/proc``), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_manifest_is_planned_exits_3_and_opens_nothing(
    tmp_path: Path, signum: int
) -> None:
    """100,000 tasks take seconds to plan: a signal then (SIGTERM as SIGINT, run/stops.py)
    exits 3 at once, before the simulator, the state DB or the output directory exist."""
    matrix = "[" + ", ".join(f"v{i}" for i in range(100)) + "]"
    manifest = tmp_path / "big.yaml"
    manifest.write_text(
        "version: 1\nname: big\ndefaults:\n  input: {mode: pro, aspect_ratio: '1:1'}\n"
        f"steps:\n  - id: s\n    repeat: 1000\n    matrix: {{a: {matrix}}}\n"
        "    prompt: 'x {{ a }}'\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*spawn_argv(manifest, out), "--simulate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
    )
    try:
        # past the interpreter's start and the imports: it is planning (about 4 s of CPU)
        wait_for(lambda: _cpu_seconds(proc.pid) > 1.2, timeout=60, what="the plan to start")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "flux-pipeline: interrupted", err
    assert not out.exists()  # no state DB, no simulator state, no reports


def test_a_sigterm_while_the_modules_are_imported_exits_3(tmp_path: Path) -> None:
    """The command line's imports take about a second of CPU; a SIGTERM then (a CI job
    cancelled at once) ended the process with the default -15 and no word. Now it is an
    interrupt like SIGINT (flux_pipeline/__main__.py): exit 3, one line. (The manifest takes
    seconds to validate, so a signal that comes after the imports is also still in time.)"""
    matrix = "[" + ", ".join(f"v{i}" for i in range(100)) + "]"
    manifest = tmp_path / "big.yaml"
    manifest.write_text(
        f"version: 1\nname: big\nsteps:\n  - id: s\n    repeat: 1000\n    matrix: {{a: {matrix}}}\n"
        "    prompt: 'x {{ a }}'\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_pipeline", "validate", str(manifest)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
    )
    try:
        wait_for(lambda: _cpu_seconds(proc.pid) > 0.1, timeout=60, what="the imports to start")
        assert proc.poll() is None, proc.communicate()  # still importing
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert err.strip().splitlines()[-1] == "flux-pipeline: interrupted", err


def test_a_sigterm_a_library_turned_into_another_error_is_still_an_interrupt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The early SIGTERM's interrupt raised inside pydantic while it built a model's validator
    came out as "internal error: SchemaError: Error building "model" validator", exit 70 (a
    full-suite run of the test above). Once the early handler has fired, an error that is not
    ours is the interrupt, exit 3."""
    import flux_pipeline
    from flux_pipeline.cli import _LazyGroup, run_cli

    def building(self: object, ctx: object, name: str) -> None:
        flux_pipeline.early_interrupt = True  # as flux_pipeline/__main__.py's handler does
        raise RuntimeError('Error building "model" validator:')

    monkeypatch.setattr(flux_pipeline, "early_interrupt", False)
    monkeypatch.setattr(_LazyGroup, "get_command", building)
    assert run_cli(["validate", "m.yaml"]) == 3
    assert capsys.readouterr().err.strip() == "flux-pipeline: interrupted"
    monkeypatch.setattr(flux_pipeline, "early_interrupt", False)

    def broken(self: object, ctx: object, name: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(_LazyGroup, "get_command", broken)
    assert run_cli(["validate", "m.yaml"]) == 70  # without a signal: an internal error
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err


def test_a_sigterm_a_library_swallowed_is_still_an_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The interrupt raised where Python ignores exceptions (a callback from C code: "Exception
    ignored in: '^([A-Za-z0-9._-]+...'") was lost, and `validate` went on and exited 0 (a
    full-suite run of the test above). Swallowed while the command's modules load: the
    command is not started; while it runs: it ends as interrupted."""
    import importlib

    import flux_pipeline
    import flux_pipeline.cli as cli_module
    from flux_pipeline.cli import run_cli

    manifest = write_manifest(tmp_path, roots_manifest("swallowed", 2))
    real_import = importlib.import_module

    def import_swallowing(name: str) -> object:
        flux_pipeline.early_interrupt = True  # the handler ran; its exception went nowhere
        return real_import(name)

    monkeypatch.setattr(flux_pipeline, "early_interrupt", False)
    monkeypatch.setattr(importlib, "import_module", import_swallowing)
    assert run_cli(["validate", str(manifest)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""  # not validated: the command never started
    assert captured.err.strip().splitlines()[-1] == "flux-pipeline: interrupted"

    monkeypatch.setattr(importlib, "import_module", real_import)
    monkeypatch.setattr(flux_pipeline, "early_interrupt", False)
    command = cli_module.cli.get_command(None, "validate")  # type: ignore[arg-type]
    assert command is not None
    assert command.callback is not None
    real_callback = command.callback

    def swallowed_while_running(*args: object, **kwargs: object) -> object:
        flux_pipeline.early_interrupt = True
        return real_callback(*args, **kwargs)

    monkeypatch.setattr(command, "callback", swallowed_while_running)
    assert run_cli(["validate", str(manifest)]) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == "flux-pipeline: interrupted"
