"""``flux-pipeline run``, assembled: plan, state DB, client, receiver, signals, engine, report.

Kept apart from the click command so tests can call ``execute`` directly, and apart from the
engine so the engine never touches the environment, the terminal or signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import default_out_dir, default_state_path
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.plan.resume import Policy
from flux_pipeline.report import github as workflow_commands
from flux_pipeline.report.files import RunInfo, keep_reports, report_is_current, write_reports
from flux_pipeline.report.lockfile import Lock, load_lock, lock_path_for
from flux_pipeline.run.adopt import adopt_into
from flux_pipeline.run.api import DEFAULT_BASE_URL, RequestType
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.client import ClientConfig, FluxClient, RetryPolicy
from flux_pipeline.run.downloads import new_download_client
from flux_pipeline.run.engine import Engine, EngineSettings, Progress, RunOutcome, settings_summary
from flux_pipeline.run.lease import hold_lease
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.preflight import check_writable
from flux_pipeline.run.receiver import BackgroundServer, CallbackReceiver, bind
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.run.store import Store
from flux_pipeline.states import FAILED_STATES

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    manifest: Path
    out_dir: Path | None = None
    state_path: Path | None = None
    simulate: bool = False
    sim_task_seconds: float = 1.5
    max_active: int = 1000
    rpm: float = 10_000
    request_type: RequestType = "async"
    retry_failed: bool = False
    resubmit_ambiguous: bool = False
    regenerate_expired: bool = False
    deadline: float | None = None
    max_new_tasks: int | None = None
    listen: str = "127.0.0.1:0"
    public_url: str | None = None
    argv: tuple[str, ...] = ()
    timing: TimingConfig | None = None
    handle_signals: bool = True
    api_down_after: float = 120.0
    retry: RetryPolicy | None = None
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    shard: tuple[int, int] | None = None  # (index, count), 1-based: run only that shard
    lock_path: Path | None = None  # default: next to the manifest (report/lockfile.py)
    no_lock: bool = False


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    base_url: str
    api_key: str = field(repr=False)


def endpoint_from_env(env: dict[str, str] | os._Environ[str]) -> Endpoint:
    key = env.get("APIXO_API_KEY", "").strip()
    if not key:
        raise UsageError(
            "APIXO_API_KEY is not set: export your API key, or use --simulate to run against "
            "the built-in simulator"
        )
    base = env.get("APIXO_BASE_URL", "").strip() or DEFAULT_BASE_URL
    if not base.startswith(("https://", "http://")):
        raise UsageError(f"APIXO_BASE_URL must be an http(s) URL, got {base!r}")
    return Endpoint(base_url=base.rstrip("/"), api_key=key)


@contextlib.contextmanager
def simulated_endpoint(task_seconds: float) -> Iterator[Endpoint]:
    from flux_pipeline.simulator import SimConfig, SimulatorThread

    key = "sim-" + secrets.token_hex(8)
    config = SimConfig(api_keys=(key,), task_seconds=task_seconds, task_spread=task_seconds / 4)
    with SimulatorThread(config, host="127.0.0.1", port=0) as sim:
        yield Endpoint(base_url=sim.base_url, api_key=key)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port)


def _resume_command(options: RunOptions) -> str:
    return "flux-pipeline " + " ".join(shlex.quote(a) for a in options.argv)


def lease_command(argv: tuple[str, ...], fallback: str) -> str:
    """How a lease names its holder: the command line (it carries no secrets: the API key and
    the callback secret are never arguments), or ``fallback`` when it is not known."""
    return "flux-pipeline " + " ".join(shlex.quote(a) for a in argv) if argv else fallback


@dataclass(frozen=True, kw_only=True)
class RunResult:
    outcome: RunOutcome
    out_dir: Path
    state_path: Path


class CallbackRelay:
    """Hands callbacks from the receiver to the engine. The receiver must exist before the
    engine (its URL is part of the engine's settings), so the engine is connected to it
    afterwards; a callback that comes before is unknown (it only ever is a hint)."""

    def __init__(self) -> None:
        self._target: Callable[[str, str | None], bool] | None = None

    def connect(self, target: Callable[[str, str | None], bool]) -> None:
        self._target = target

    def __call__(self, task_id: str, key: str | None = None) -> bool:
        return self._target is not None and self._target(task_id, key)


@dataclass(frozen=True, kw_only=True)
class _Callbacks:
    server: BackgroundServer
    url: str


def _callbacks(options: RunOptions, relay: CallbackRelay) -> _Callbacks | None:
    """Callback mode: the receiver, served where the API can reach it."""
    if options.request_type != "callback":
        return None
    receiver = CallbackReceiver(relay)
    if workflow_commands.enabled():  # masked before anything could print it
        workflow_commands.emit([workflow_commands.add_mask(receiver.secret)])
    host, port = _parse_listen(options.listen)
    server = BackgroundServer(receiver.app, bind(host, port))
    public = (options.public_url or server.url).rstrip("/")
    return _Callbacks(server=server, url=public + receiver.path)


async def execute(
    options: RunOptions,
    *,
    endpoint: Endpoint,
    progress: Callable[[Progress], None] | None = None,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run a manifest to completion or to a resumable stop, then write the report. Before
    the state DB is opened and anything is sent: the outputs must be writable
    (``run/preflight.py``) and no other run may hold this state DB or output directory
    (``run/lease.py``, exit 2 naming the holder)."""
    plan = load_plan(options.manifest)
    if options.shard is not None:
        from flux_pipeline.plan.shard import select

        plan = select(plan, *options.shard)
    out_dir = options.out_dir or default_out_dir(plan.name)
    state_path = options.state_path or default_state_path(out_dir, options.shard)
    lock_path = None if options.no_lock else options.lock_path or lock_path_for(options.manifest)
    lock = load_lock(lock_path, plan=plan, out_dir=out_dir) if lock_path else None  # exit 2
    check_writable(out_dir, state_path)
    command = lease_command(options.argv, f"flux-pipeline run {options.manifest}")
    with hold_lease(state_path, out_dir, command=command):
        # a shard does not write the lock (shards would race): merge does
        keeper = None
        if lock_path is not None and options.shard is None:
            keeper = LockKeeper(lock_path, plan, lock, echo=echo)
        return await _execute(
            options, plan, out_dir, state_path, endpoint, progress, echo, lock, keeper
        )


async def _execute(
    options: RunOptions,
    plan: Plan,
    out_dir: Path,
    state_path: Path,
    endpoint: Endpoint,
    progress: Callable[[Progress], None] | None,
    echo: Callable[[str], None],
    lock: Lock | None = None,
    keeper: LockKeeper | None = None,
) -> RunResult:
    timing = options.timing or (
        TimingConfig(first_poll=options.sim_task_seconds * 0.6) if options.simulate else None
    )
    budget = TokenBucket(options.rpm)
    client_config = ClientConfig(
        base_url=endpoint.base_url,
        # enough for the full request budget at ~0.35 s per answer; httpx scans its whole pool
        # on every request, so a bigger pool only costs CPU
        max_connections=min(64, max(4, options.max_active)),
        retry=options.retry or RetryPolicy(),
    )
    started_wall = time.time()
    had_db = state_path.exists()
    store = await Store.open(state_path)
    try:  # before the engine decides anything (docs/lockfile.md)
        adopted = await adopt_into(store, plan, lock, out_dir, had_db=had_db)
    except BaseException:
        await store.aclose()
        raise
    if adopted.records:
        echo(f"flux-pipeline: adopted {len(adopted.records)} task(s) from the {adopted.source}")
    relay = CallbackRelay()
    callbacks = _callbacks(options, relay)
    settings = EngineSettings(
        out_dir=out_dir,
        max_active=options.max_active,
        request_type=options.request_type,
        callback_url=callbacks.url if callbacks else None,
        policy=Policy(
            retry_failed=options.retry_failed,
            resubmit_ambiguous=options.resubmit_ambiguous,
            regenerate_expired=options.regenerate_expired,
        ),
        max_new_tasks=options.max_new_tasks,
        timing=timing or TimingConfig(),
        api_down_after=options.api_down_after,
    )
    summary: dict[str, Any] = settings_summary(settings) | {"rpm": options.rpm}
    if options.shard is not None:
        summary["shard"] = f"{options.shard[0]}/{options.shard[1]}"
    run_id = await store.begin_run(
        manifest=plan.name,
        manifest_sha256=plan.manifest_sha256,
        settings=summary,
        planned=len(plan.tasks),
    )
    outcome: RunOutcome | None = None
    async with (
        FluxClient(
            api_key=endpoint.api_key,
            config=client_config,
            transport=options.transport,
            budget=budget,
        ) as client,
        new_download_client() as downloads,
        anyio.create_task_group() as outer,
    ):
        store.start(outer)
        if keeper is not None:
            outer.start_soon(keeper.every, store)
        try:
            engine = Engine(
                plan=plan,
                store=store,
                client=client,
                downloads=downloads,
                budget=budget,
                settings=settings,
                progress=progress,
            )
            relay.connect(engine.on_callback)
            outcome = await _run_engine(engine, options, callbacks, echo)
        finally:
            if keeper is not None:
                keeper.stop()
            with anyio.CancelScope(shield=True):
                info = RunInfo(
                    settings=summary,
                    started_at=started_wall,
                    finished_at=time.time(),
                    elapsed=outcome.elapsed if outcome else None,
                    exit_code=outcome.exit_code if outcome else None,
                    stop_reason=outcome.stop_reason if outcome else "interrupted",
                    error=outcome.error if outcome else None,
                    created=outcome.created if outcome else None,
                    resume_command=_resume_command(options),
                    engine_stats=outcome.stats if outcome else None,
                    state_fingerprint="",  # _finish fills it in once the queue is committed
                )
                await _finish(store, plan, out_dir, run_id, outcome, info, keeper)
    assert outcome is not None
    return RunResult(outcome=outcome, out_dir=out_dir, state_path=state_path)


async def _run_engine(
    engine: Engine,
    options: RunOptions,
    callbacks: _Callbacks | None,
    echo: Callable[[str], None],
) -> RunOutcome:
    """The engine, with the receiver, the signal handlers and the deadline around it."""
    async with anyio.create_task_group() as tg:
        if callbacks is not None:
            tg.start_soon(callbacks.server.run)
        if options.handle_signals:
            tg.start_soon(_watch_signals, engine, echo)
        if options.deadline is not None:
            tg.start_soon(_watch_deadline, engine, options.deadline)
        outcome = await engine.run()
        if callbacks is not None:
            await callbacks.server.stop()
        tg.cancel_scope.cancel()
    return outcome


async def _finish(
    store: Store,
    plan: Plan,
    out_dir: Path,
    run_id: int,
    outcome: RunOutcome | None,
    info: RunInfo,
    keeper: LockKeeper | None = None,
) -> None:
    """The run's ending, also when it was interrupted (``outcome`` None); called shielded."""
    # 1. the run's row: end_run first commits every transition still queued, so everything
    #    read below sees the run's last state (an interrupted run keeps its row unfinished)
    if outcome is not None:
        await store.end_run(
            run_id,
            exit_code=outcome.exit_code,
            stop_reason=outcome.stop_reason,
            last_error=outcome.error,
        )
    # 2. the fingerprint of the state (flushes too): equal to the report's on disk, the
    #    report need not be written again (docs/reports.md)
    fingerprint = await store.fingerprint()
    info = dataclasses.replace(info, state_fingerprint=fingerprint)
    current = outcome is not None and report_is_current(out_dir, plan.manifest_sha256, fingerprint)
    # 3. the records, unless nothing needs them: a current report with no annotations to make
    #    skips reading 100,000 rows
    annotate = workflow_commands.enabled()
    lock_current = keeper is None or (current and keeper.on_disk)
    records = {} if current and not annotate and lock_current else await store.records()
    # 3b. the lock file (docs/lockfile.md), before the report consumes the records
    if not lock_current:
        assert keeper is not None
        await anyio.to_thread.run_sync(keeper.write, records)
    # 4. the failed tasks for the annotations, taken before the report consumes the records
    failed = [r for r in records.values() if r.state in FAILED_STATES]
    # 5. the report (and the step summary, which write_reports and keep_reports append)
    if current:  # nothing changed: the report on disk says exactly this
        keep_reports(out_dir)
    else:  # consumes the records: a big report never holds them twice
        write_reports(plan, records, out_dir, info, consume=True)
    # 6. the store, once nothing reads it any more
    await store.aclose()
    # 7. annotations last: they point at report files that now exist
    if annotate:
        workflow_commands.emit(workflow_commands.failure_annotations(plan, failed))


async def _watch_signals(engine: Engine, echo: Callable[[str], None]) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            echo(f"flux-pipeline: {name} received: stopping, state is kept (resume by rerunning)")
            engine.request_stop(f"signal {name}")


async def _watch_deadline(engine: Engine, seconds: float) -> None:
    await anyio.sleep(seconds)
    engine.request_stop(f"deadline of {seconds:g}s reached")
