"""Shared helpers of the run-and-resume integration tests.

Everything talks to the simulator over real HTTP on loopback: ``SimulatorThread`` in this
process when the run is in-process too, ``SimProcess`` (``python -m flux_pipeline sim``) when
the run is a subprocess that gets killed or signalled. Waiting is always on an observable
condition with a deadline (``wait_for``/``await_for``), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import io
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol
from urllib.parse import parse_qs

import anyio
import httpx
from PIL import Image

from flux_pipeline.cli import run_cli
from flux_pipeline.layout import STATE_DIR
from flux_pipeline.run.runner import Endpoint, RunOptions, RunResult, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.simulator import SimConfig, SimulatorThread

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


def roots_manifest(name: str, count: int, *, results: str = "png", extra: str = "") -> str:
    """``count`` root tasks with distinct prompts ``subject number I`` (I from 0)."""
    subjects = [f"number {i}" for i in range(count)]
    return (
        "version: 1\n"
        f"name: {name}\n"
        "defaults:\n"
        "  input: {mode: pro, aspect_ratio: '1:1', output_format: " + results + "}\n"
        "steps:\n"
        "  - id: shot\n"
        "    matrix:\n"
        f"      subject: {json.dumps(subjects)}\n"
        "    prompt: 'subject {{ subject }}'\n"
    ) + extra


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


def lock_file(manifest: Path) -> Path:
    """The lock file a run of ``manifest`` writes by default (docs/lockfile.md)."""
    return manifest.with_name(manifest.stem + ".lock.json")


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
    """Every image file under ``out`` (reports, gallery and state DB aside: the gallery's
    thumbnails are in the state directory)."""
    state = out / STATE_DIR
    return sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.suffix in IMAGE_SUFFIXES and state not in p.parents
    )


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


# --- a hostile HTTP proxy -------------------------------------------------------------------


@dataclass
class Exchange:
    """One request the proxy received (and forwarded): what a rule decides on."""

    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # names lowercased
    body: bytes
    number: int  # 1 for the proxy's first request, counted over every path

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def query(self, name: str) -> str | None:
        values = parse_qs(self.target.partition("?")[2]).get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    """What the proxy sends back. ``close_delimited``: no Content-Length, the body ends when
    the proxy closes the connection (legal HTTP/1.1, and the only way a client cannot tell a
    short body from a whole one)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    close_delimited: bool = False
    advertised: int | None = None  # a Content-Length larger than the body: close after it

    @classmethod
    def of_json(cls, payload: object, status: int = 200) -> Answer:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, [("content-type", "application/json")])

    @classmethod
    def raw_json(cls, text: str, status: int = 200) -> Answer:
        return cls(status, text.encode(), [("content-type", "application/json")])

    @classmethod
    def html(cls, status: int) -> Answer:
        title = f"{status} Gateway Time-out" if status == 504 else f"{status} Bad Gateway"
        body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        return cls(status, body.encode(), [("content-type", "text/html")])

    def payload(self) -> Any:
        return json.loads(self.body)


# Given the request (already forwarded: its side effects at the API happened) and the
# upstream answer, return the answer to send (or a coroutine returning it: e.g. one that
# holds the answer back, with the request processed).
Rule = Callable[[Exchange, Answer], Answer | Awaitable[Answer]]
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}
_ANSWER_DROP = _HOP_HEADERS | {"content-encoding", "date", "server"}


def pass_through(exchange: Exchange, answer: Answer) -> Answer:
    return answer


# Called before forwarding: an answer here is sent instead, and the API never sees the request.
Before = Callable[[Exchange], Answer | None]


def forward_all(exchange: Exchange) -> Answer | None:
    return None


class HostileProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of ``upstream`` (the simulator), in a thread.

    Every request is forwarded with the proxy's own ``Host``, so the simulator's result URLs
    point back at the proxy and downloads go through it too; ``rule`` then chooses what the
    client gets. Written on raw asyncio streams (not an ASGI server) so that it can send what
    no well-behaved server does, e.g. a close-delimited body cut short. ``exchanges`` lists
    every request received, in order.
    """

    def __init__(
        self, upstream: str, rule: Rule = pass_through, before: Before = forward_all
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule = rule
        self.before = before
        self.exchanges: list[Exchange] = []
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> HostileProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            handlers: set[asyncio.Task[None]] = set()

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                assert task is not None
                handlers.add(task)
                try:
                    await self._serve(client, reader, writer)
                except asyncio.CancelledError:
                    pass  # the proxy is closing: an answer held back is never sent
                finally:
                    handlers.discard(task)

            async with httpx.AsyncClient(
                base_url=self.upstream, trust_env=False, timeout=30
            ) as client:
                server = await asyncio.start_server(handle, "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                self.base_url = f"http://127.0.0.1:{port}"
                ready.set()
                await self._stop.wait()
                server.close()
                for task in list(handlers):
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
                await server.wait_closed()

        def run() -> None:
            try:
                loop = asyncio.new_event_loop()
                self._loop = loop
                loop.run_until_complete(main())
                loop.close()
            except BaseException as exc:  # surfaced by __enter__
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="hostile-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise AssertionError(f"hostile proxy did not start: {failure}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def requests_to(self, path: str) -> list[Exchange]:
        return [e for e in list(self.exchanges) if e.path == path]

    async def _serve(
        self, client: httpx.AsyncClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                exchange = Exchange(method, target, headers, body, len(self.exchanges) + 1)
                self.exchanges.append(exchange)
                answer = self.before(exchange)
                if answer is None:
                    forward = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
                    forward["host"] = self.base_url.removeprefix("http://")
                    forward["accept-encoding"] = "identity"
                    try:
                        upstream = await client.request(
                            method, target, headers=forward, content=body
                        )
                    except httpx.HTTPError:
                        await self._send(writer, Answer.html(502))
                        return
                    kept = [(k, v) for k, v in upstream.headers.items() if k not in _ANSWER_DROP]
                    got = Answer(upstream.status_code, upstream.content, kept)
                    chosen = self.rule(exchange, got)
                    answer = await chosen if inspect.isawaitable(chosen) else chosen
                await self._send(writer, answer)
                closing = answer.close_delimited or answer.advertised is not None
                if closing or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, answer: Answer) -> None:
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {answer.status} {reason}"]
        head += [f"{k}: {v}" for k, v in answer.headers]
        if answer.close_delimited:
            head.append("connection: close")
        else:
            head.append(f"content-length: {answer.advertised or len(answer.body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body)
        await writer.drain()


class _HasBaseUrl(Protocol):
    @property
    def base_url(self) -> str: ...


def quick_sim(api_key: str, **settings: Any) -> SimulatorThread:
    """A simulator thread with 0.2 s tasks (no spread) accepting ``api_key``; ``settings``
    are further ``SimConfig`` fields (``faults=Faults(...)``, ``results_per_task=2``...)."""
    return SimulatorThread(
        SimConfig(api_keys=(api_key,), task_seconds=0.2, task_spread=0.0, **settings)
    )


def sim_tasks(sim: _HasBaseUrl) -> list[dict[str, Any]]:
    """Every task the simulator ever created (``GET /_sim/tasks``), in creation order."""
    data: dict[str, Any] = SimAdmin(sim.base_url)._call("GET", "/_sim/tasks")
    tasks: list[dict[str, Any]] = data["tasks"]
    return tasks


def lost_creates(admin: _HasBaseUrl, out: Path) -> list[str]:
    """TaskIds the API created that the state DB does not hold: creates whose answer a run
    never recorded (each one an ambiguous task, or a task paid twice later)."""
    known = {r.task_id for r in db_rows(state_path(out)).values() if r.task_id}
    return [t["taskId"] for t in sim_tasks(admin) if t["taskId"] not in known]


def ambiguous_ids(out: Path) -> list[str]:
    """The tasks ``flux-pipeline status --json`` lists as ambiguous (readable ids)."""
    if not state_path(out).exists():
        return []
    ids: list[str] = cli_json("status", "--json", "--state", str(state_path(out)))["ambiguous"]
    return ids


def claimed_created(text: str) -> list[int]:
    """Every count of created tasks a run printed: ``created N`` (progress lines) and
    ``N task(s) created`` (its last line)."""
    found = re.findall(r"created (\d+)|(\d+) task\(s\) created", text)
    return [int(a or b) for a, b in found]


def dropped() -> Answer:
    """A connection closed after headers promising a body: no answer (as the simulator's
    drops). From a ``Before`` hook the API never saw the request."""
    return Answer(200, b"", [("content-type", "application/json")], advertised=64)


def submitting(out: Path) -> list[Row]:
    """Rows left ``submitting``: tasks whose create may or may not have reached the API."""
    return [r for r in db_rows(state_path(out)).values() if r.state == "submitting"]


# --- the kill -9 table ----------------------------------------------------------------------


def row_prompts(out: Path) -> dict[str, str]:
    """Task key -> the prompt of its request (``request_json``), from the state DB."""
    path = state_path(out)
    if not path.exists():
        return {}
    db = sqlite3.connect(path, timeout=10)
    try:
        rows = db.execute("SELECT key, request_json FROM tasks").fetchall()
    finally:
        db.close()
    return {key: str(json.loads(text)["input"]["prompt"]) for key, text in rows}


@dataclass(frozen=True)
class KillRow:
    """What one ``kill -9`` left. ``ambiguous``: tasks newly left ``submitting`` (a row, at
    its attempt, that was not already ``submitting`` before this run); ``lost``: creates the
    API received during this run whose taskId the DB never recorded; ``unmatched``: new
    ambiguous tasks for which the API received no such create (ambiguity without a lost
    answer: the create never left, or was refused)."""

    kill: int
    creates: int  # the simulator's creates so far
    ambiguous: int
    lost: int
    unmatched: int

    @property
    def difference(self) -> int:
        return self.ambiguous - self.lost


def kill_table(
    work: Path,
    *,
    tasks: int,
    kills: int,
    seed: int,
    task_seconds: float = 0.2,
    max_step: int | None = None,
) -> list[KillRow]:
    """Run ``tasks`` root tasks (``--rpm 1200``: most wait for a budget token) against a
    simulator process whose answers are half of them slowed 0.3 s after processing, and
    ``kill -9`` the run at ``kills`` seeded moments: when the simulator has received a seeded
    number of new creates, at most ``max_step`` (or status requests, once every task is
    created). Each resume runs with ``--resubmit-ambiguous``, like a user finishing the
    batch would."""
    rng = random.Random(seed)
    manifest = write_manifest(work, roots_manifest("kills", tasks))
    out = work / "out"
    table: list[KillRow] = []
    sim_args = ("--api-key", "kill-key", "--task-seconds", str(task_seconds), "--seed", str(seed))
    slow = ("--slow-rate", "0.5", "--slow-seconds", "0.3")
    held: set[tuple[str, int]] = set()
    with SimProcess(work, *sim_args, *slow) as sim:
        for kill in range(1, kills + 1):
            stats = sim.stats()
            creates0 = stats["creates"]
            polls0 = stats["requests_by_endpoint"].get("status", 0)
            step = rng.randint(1, max_step or max(2, tasks // 5))
            run = spawn_run(
                manifest,
                out,
                "--rpm",
                "1200",
                "--resubmit-ambiguous",
                base_url=sim.base_url,
                api_key="kill-key",
                logs=work / "logs",
                tag=f"run{kill}",
            )

            def moment(c0: int = creates0, p0: int = polls0, n: int = step) -> bool:
                now = sim.stats()
                if c0 >= tasks:  # nothing left to create: kill among the polls
                    return bool(now["requests_by_endpoint"].get("status", 0) >= p0 + n)
                return bool(now["creates"] >= min(tasks, c0 + n))

            proc = run.proc
            try:
                wait_for(
                    lambda p=proc: p.poll() is not None or moment(),  # type: ignore[misc]
                    timeout=60,
                    what=f"kill moment {kill}",
                    interval=0.005,
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            known = {r.task_id for r in db_rows(state_path(out)).values() if r.task_id}
            created = sim_tasks(sim)[creates0:]
            lost = [t for t in created if t["taskId"] not in known]
            lost_prompts = {t["prompt"] for t in lost}
            prompts = row_prompts(out)
            now_held = {(r.key, r.attempts) for r in submitting(out)}
            new = now_held - held
            held = now_held
            unmatched = sum(prompts[key] not in lost_prompts for key, _ in new)
            table.append(KillRow(kill, creates0 + len(created), len(new), len(lost), unmatched))
    return table


def format_kill_table(rows: list[KillRow]) -> str:
    head = f"{'kill':>4} {'creates':>7} {'ambiguous':>9} {'lost':>5} {'diff':>5} {'unmatched':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.kill:>4} {r.creates:>7} {r.ambiguous:>9} {r.lost:>5} {r.difference:>5} "
            f"{r.unmatched:>9}"
        )
    return "\n".join(lines)
