"""Shared helpers of the run-and-resume integration tests.

Everything talks to the simulator over real HTTP on loopback: ``SimulatorThread`` in this
process when the run is in-process too, ``SimProcess`` (``python -m flux_pipeline sim``) when
the run is a subprocess that gets killed or signalled. Waiting is always on an observable
condition with a deadline (``wait_for``/``await_for``), never a bare sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import anyio
import httpx
from PIL import Image

from flux_pipeline.cli import run_cli
from flux_pipeline.run.runner import Endpoint, RunOptions, RunResult, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.simulator import SimulatorThread

FAST = TimingConfig(first_poll=0.05, max_interval=0.5)
SIM_LINE = re.compile(r"flux-pipeline simulator listening on (http://127\.0\.0\.1:\d+)\s*$")
_ENV_DROP = ("APIXO_API_KEY", "APIXO_BASE_URL", "GITHUB_STEP_SUMMARY", "FLUX_PIPELINE_DEBUG")


# --- waiting --------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def await_for(
    predicate: Callable[[], Awaitable[bool]],
    *,
    within: float,
    what: str,
    interval: float = 0.02,
) -> None:
    """``wait_for`` for async predicates (e.g. simulator stats read off the event loop)."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await anyio.sleep(interval)


# --- environment and manifests --------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: no proxies, no inherited key or base URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and k not in _ENV_DROP
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def write_manifest(directory: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def chained_manifest(
    name: str,
    subjects: list[str],
    styles: list[str],
    *,
    chained: bool = True,
    output_format: str = "png",
    images: list[str] | None = None,
) -> str:
    """``shot``: subjects x styles, no repeat; ``edit`` (optional): one chained edit of each."""
    lines = [
        "version: 1",
        f"name: {name}",
        "defaults:",
        "  input: {mode: pro, aspect_ratio: '1:1', output_format: " + output_format + "}",
        "steps:",
        "  - id: shot",
        "    matrix:",
        f"      subject: {json.dumps(subjects)}",
        f"      style: {json.dumps(styles)}",
        "    prompt: 'a {{ subject }} drawn in {{ style }} style'",
    ]
    if images is not None:
        lines.append(f"    images: {json.dumps(images)}")
    if chained:
        lines += [
            "  - id: edit",
            "    from: shot",
            "    prompt: 'give the {{ parent.subject }} a red scarf'",
        ]
    return "\n".join(lines) + "\n"


# --- the simulator --------------------------------------------------------------------------


class SimAdmin:
    """``/_sim/*`` of a simulator at ``base_url`` (works for a thread or a process)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=10) as client:
            response = client.request(method, path, json=payload)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", "/_sim/stats")
        return data

    def set_faults(self, **changes: object) -> dict[str, Any]:
        data: dict[str, Any] = self._call("POST", "/_sim/faults", changes)
        return data

    def advance(self, seconds: float) -> None:
        self._call("POST", "/_sim/clock", {"advance": seconds})

    def task(self, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self._call("GET", f"/_sim/tasks/{task_id}")
        return data

    async def astats(self) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self.stats)

    async def aadvance(self, seconds: float) -> None:
        await anyio.to_thread.run_sync(self.advance, seconds)

    async def atask(self, task_id: str) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self.task, task_id)


class SimProcess(SimAdmin):
    """``python -m flux_pipeline sim --port 0 ARGS`` as a subprocess; a context manager."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        super().__init__("")
        self._args = args
        self._log_path = log_dir / "sim.log"
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimProcess:
        self._log = self._log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flux_pipeline", "sim", "--port", "0", *self._args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = SIM_LINE.match(line)
        if match is None:
            self.close()
            raise AssertionError(
                f"simulator did not start: {line!r}; log: {self._log_path.read_text()}"
            )
        self.base_url = match.group(1)
        return self

    def close(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def admin_of(sim: SimulatorThread) -> SimAdmin:
    return SimAdmin(sim.base_url)


# --- runs -----------------------------------------------------------------------------------


def run_argv(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flux_pipeline", "run", str(manifest), "--out", str(out), *extra]


@dataclass
class RunProcess:
    """A ``flux-pipeline run`` subprocess whose stdout and stderr go to files."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(
            errors="replace"
        )


def spawn_run(
    manifest: Path,
    out: Path,
    *extra: str,
    base_url: str,
    api_key: str,
    logs: Path,
    tag: str,
    env: dict[str, str] | None = None,
) -> RunProcess:
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path = logs / f"{tag}.stdout"
    stderr_path = logs / f"{tag}.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            run_argv(manifest, out, *extra),
            stdout=stdout,
            stderr=stderr,
            env=env or clean_env(APIXO_API_KEY=api_key, APIXO_BASE_URL=base_url),
        )
    return RunProcess(proc, stdout_path, stderr_path)


async def run_inprocess(
    manifest: Path,
    out: Path,
    *,
    base_url: str,
    api_key: str,
    lines: list[str] | None = None,
    **options: Any,
) -> RunResult:
    """``runner.execute`` in this process: no signal handlers, fast polling."""
    options.setdefault("timing", FAST)
    sink = lines if lines is not None else []
    return await execute(
        RunOptions(manifest=manifest, out_dir=out, handle_signals=False, **options),
        endpoint=Endpoint(base_url=base_url, api_key=api_key),
        echo=sink.append,
    )


def cli(*argv: str) -> tuple[int, str]:
    """Run a command that sends nothing (``status``, ``plan``, ``report``) in-process."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run_cli(list(argv))
    return code, buffer.getvalue()


def cli_json(*argv: str) -> dict[str, Any]:
    """The JSON a ``--json`` command prints."""
    code, text = cli(*argv)
    assert code == 0, (argv, text)
    data: dict[str, Any] = json.loads(text)
    return data


async def acli_json(*argv: str) -> dict[str, Any]:
    """``cli_json`` from async code (the command runs its own event loop, in a thread)."""
    return await anyio.to_thread.run_sync(lambda: cli_json(*argv))


async def rewritten_report(manifest: Path, out: Path) -> dict[str, Any]:
    """``flux-pipeline report`` (report files rewritten from the closed state DB), loaded."""
    code, text = await anyio.to_thread.run_sync(
        lambda: cli("report", str(manifest), "--out", str(out))
    )
    assert code == 0, text
    return load_report(out)


# --- the state DB ---------------------------------------------------------------------------


def state_path(out: Path) -> Path:
    return out / ".flux-pipeline" / "state.sqlite3"


@dataclass(frozen=True)
class Row:
    key: str
    readable_id: str
    state: str
    task_id: str | None
    attempts: int


def db_rows(path: Path) -> dict[str, Row]:
    """Every task row of the state DB (read while a run may be writing: WAL allows it)."""
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=10)
    try:
        try:
            rows = db.execute(
                "SELECT key, readable_id, state, task_id, attempts FROM tasks"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, not yet migrated
                return {}
            raise
    finally:
        db.close()
    return {r[0]: Row(*r) for r in rows}


def db_execute(path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    """Change the state DB between runs (simulating what a crash leaves); rows changed."""
    db = sqlite3.connect(path, timeout=10)
    try:
        with db:
            return db.execute(sql, params).rowcount
    finally:
        db.close()


# --- reports and output files ---------------------------------------------------------------


def load_report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


def report_tasks(out: Path) -> dict[str, dict[str, Any]]:
    return {t["readable_id"]: t for t in load_report(out)["tasks"]}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_outputs(out: Path, report: dict[str, Any]) -> int:
    """Every output the report lists: on disk, same size and SHA-256, a readable image whose
    format matches its extension. Returns the number of files checked."""
    formats = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}
    checked = 0
    for task in report["tasks"]:
        for output in task["outputs"]:
            path = out / output["path"]
            assert path.is_file(), f"{task['readable_id']}: {path} is missing"
            assert path.stat().st_size == output["bytes"], path
            assert sha256_of(path) == output["sha256"], f"{path}: SHA-256 differs from report"
            with Image.open(path) as image:
                assert image.format == formats[path.suffix], path
                image.verify()
            assert task["taskId"]
            assert task["taskId"] in output["url"]
            checked += 1
    return checked


IMAGE_SUFFIXES = {".png", ".jpg", ".webp"}


def image_files(out: Path) -> list[Path]:
    """Every image file under ``out`` (reports, gallery and state DB aside)."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in IMAGE_SUFFIXES)


def leftovers(out: Path) -> list[Path]:
    """Temporary files a download or a report write left behind."""
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name.endswith(".part"))


def db_states(out: Path) -> dict[str, str]:
    """State by readable id, from the state DB (the authority; see ``settled_report``)."""
    return {r.readable_id: r.state for r in db_rows(state_path(out)).values()}


async def settled_report(
    manifest: Path, out: Path, *, base_url: str, api_key: str, code: int, **options: Any
) -> dict[str, Any]:
    """Rerun a finished batch (it must create nothing) and return the report it wrote.

    A run's own report.json can miss its last transitions (``Store.flush_and_wait`` does not
    wait for the batch being committed: pinned by test_report_consistency.py), so tests whose
    subject is not the report check the one a no-op rerun writes from the settled DB.
    """
    result = await run_inprocess(manifest, out, base_url=base_url, api_key=api_key, **options)
    assert result.outcome.exit_code == code, result.outcome
    assert result.outcome.created == 0, result.outcome
    return load_report(out)
