"""``flux-pipeline run``, assembled: plan, state DB, client, receiver, signals, engine, report.

Kept apart from the click command so tests can call ``execute`` directly, and apart from the
engine so the engine never touches the environment, the terminal or signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flux_pipeline import redact
from flux_pipeline.errors import ExitCode, UsageError
from flux_pipeline.layout import simulator_state_path
from flux_pipeline.manifest.models import Pricing
from flux_pipeline.plan.cost import CostCap, describe, would_create
from flux_pipeline.plan.focus import focus
from flux_pipeline.plan.resume import Policy
from flux_pipeline.plan.review_gate import ReviewGate
from flux_pipeline.report import github as workflow_commands
from flux_pipeline.report.files import RunInfo
from flux_pipeline.report.lockfile import Lock, load_lock
from flux_pipeline.run.adopt import adopt_into, at_generations
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.checks import (
    Endpoint,
    ProbedApp,
    check_owner,
    endpoint_from_env,
    parse_listen,
    probe_public_url,
    probeable,
)
from flux_pipeline.run.client import ClientConfig, FluxClient, RetryPolicy
from flux_pipeline.run.downloads import new_download_client
from flux_pipeline.run.engine import Engine, EngineSettings, Progress, RunOutcome, settings_summary
from flux_pipeline.run.finish import finish_run
from flux_pipeline.run.lease import hold_lease
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.lock_memo import read_memo
from flux_pipeline.run.preflight import check_writable
from flux_pipeline.run.prepared import Prepared, RunOptions, prepare
from flux_pipeline.run.receiver import BackgroundServer, CallbackReceiver, bind
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.run.simulated import simulated_endpoint
from flux_pipeline.run.stops import Stops
from flux_pipeline.run.storage_run import StorageRun
from flux_pipeline.run.store import Store
from flux_pipeline.states import TaskRecord

__all__ = ["Endpoint", "RunOptions", "RunResult", "endpoint_from_env", "execute", "prepare"]


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
    review: ReviewGate | None = None  # the review gate the run's plan was made with


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

    token: str | None = None  # the probe's, when the public URL is probed (run/checks.py)


def _callbacks(
    options: RunOptions, relay: CallbackRelay, echo: Callable[[str], None]
) -> _Callbacks | None:
    """Callback mode: the receiver, bound where the API can reach it (listening at once, so
    the probe's connection waits in the backlog until uvicorn serves it)."""
    if options.request_type != "callback":
        return None
    receiver = CallbackReceiver(relay, log=echo)
    redact.register(receiver.secret)  # e.g. echoed in a refused callback URL (docs/secrets.md)
    if workflow_commands.enabled():  # masked before anything could print it
        workflow_commands.emit([workflow_commands.add_mask(receiver.secret)])
    host, port = parse_listen(options.listen)
    try:
        sock = bind(host, port)
        sock.listen(128)
    except OSError as exc:
        problem = exc.strerror or exc
        raise UsageError(f"--listen {options.listen}: cannot listen there: {problem}") from None
    app = ProbedApp(receiver.app)
    server = BackgroundServer(app, sock, before_stop=receiver.close)
    public = (options.public_url or server.url).rstrip("/")
    token = app.token if probeable(public, host) else None
    return _Callbacks(server=server, url=public + receiver.path, token=token)


async def execute(
    options: RunOptions,
    *,
    endpoint: Endpoint | None,
    progress: Callable[[Progress], None] | None = None,
    echo: Callable[[str], None] = print,
    prepared: Prepared | None = None,
) -> RunResult:
    """Run a manifest to completion or to a resumable stop, then write the report. Before
    the state DB is opened and anything is sent: the settings are checked (``prepare``), the
    outputs must be writable (``run/preflight.py``) and no other run may hold this state DB
    or output directory (``run/lease.py``, exit 2 naming the holder). ``endpoint`` None: the
    built-in simulator (``options.simulate``), started under the lease."""
    stops = Stops(echo)
    error: Exception | None = None
    async with anyio.create_task_group() as watchers:
        if options.handle_signals:
            await watchers.start(stops.watch)
        try:
            ready = prepared or prepare(options)
            outputs = (t.output_paths(1)[0] for t in ready.plan.tasks)
            check_writable(ready.out_dir, ready.state_path, outputs=outputs)
            command = lease_command(options.argv, f"flux-pipeline run {options.manifest}")
            with hold_lease(ready.state_path, ready.out_dir, command=command):
                result = await _leased(options, ready, endpoint, progress, echo, stops)
        except Exception as exc:  # raised below as it is, not inside the group's own group
            error = exc
        finally:
            watchers.cancel_scope.cancel()
    if error is not None:
        raise error
    if stops.late and result.outcome.exit_code != ExitCode.RESUMABLE:
        # the reports are written and say how the run ended; the process was interrupted
        result.outcome.exit_code = ExitCode.RESUMABLE
        result.outcome.stop_reason = f"{stops.reason} while writing the reports"
    return result


async def _leased(
    options: RunOptions,
    ready: Prepared,
    endpoint: Endpoint | None,
    progress: Callable[[Progress], None] | None,
    echo: Callable[[str], None],
    stops: Stops,
) -> RunResult:
    """Under the lease: the simulator's state beside the DB is this run's alone."""
    if endpoint is not None:
        return await _execute(options, ready, endpoint, progress, echo, stops)
    if not options.simulate:
        raise UsageError("no API endpoint: set APIXO_API_KEY, or use --simulate")
    sim_state = simulator_state_path(ready.state_path)
    async with simulated_endpoint(options.sim_task_seconds, sim_state, echo) as simulated:
        echo(f"flux-pipeline: simulating the API at {simulated.base_url}")
        return await _execute(options, ready, simulated, progress, echo, stops)


async def _execute(
    options: RunOptions,
    ready: Prepared,
    endpoint: Endpoint,
    progress: Callable[[Progress], None] | None,
    echo: Callable[[str], None],
    stops: Stops,
) -> RunResult:
    """One shutdown path: everything opened here is entered on one exit stack, so whatever
    raises, and whenever, the HTTP clients, the store (flushed) and the receiver are closed,
    each in a shielded scope, before the error leaves."""
    plan, out_dir, state_path = ready.plan, ready.out_dir, ready.state_path
    budget = TokenBucket(options.rpm)
    started_wall = time.time()
    relay = CallbackRelay()
    outcome: RunOutcome | None = None
    async with contextlib.AsyncExitStack() as stack:
        outer = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(outer.cancel_scope.cancel)  # runs before the group waits for its tasks
        callbacks = _callbacks(options, relay, echo)
        if callbacks is not None:
            outer.start_soon(callbacks.server.run)
            stack.push_async_callback(callbacks.server.stop)
            if callbacks.token is not None:
                listening = callbacks.server.url
                public = (options.public_url or listening).rstrip("/")
                await probe_public_url(public, callbacks.token, listening=listening)
        had_db = state_path.exists()
        store = await Store.open(state_path)
        stack.push_async_callback(store.aclose)
        await check_owner(store, plan.name, explicit=options.state_path is not None)
        # the bucket checked and the reference images in it before anything is created
        stored = await StorageRun.start(ready.storage, plan, echo) if ready.storage else None
        # before the engine decides anything (docs/lockfile.md): the tasks at the generations
        # the DB and the lock record, what the lock adds, then this run's focus
        lock, unread = ready.lock, ready.lock_unread
        if unread is not None and (not had_db or read_memo(state_path) != unread):
            lock, unread = _read_lock(ready), None  # the DB changed since: read it after all
        plan = at_generations(plan, await store.generations(), lock)
        # every row, read once: the focus, the cost line, the engine
        source, count, records = await adopt_into(store, plan, lock, out_dir, had_db=had_db)
        if count:
            echo(f"flux-pipeline: adopted {count} task(s) from the {source}")
        if stored is not None:  # adopted outputs the output directory lacks, from the bucket
            await stored.restore(records, lock, out_dir)
        focused = focus(
            plan,
            records,
            regenerate=options.regenerate,
            only=options.only,
            limit=options.limit,
            decisions=ready.review.verdicts() if ready.review is not None else None,
            regenerate_rejected=options.regenerate_rejected,
        )
        plan = focused.plan
        for note in focused.notes:
            echo(f"flux-pipeline: {note}")
        keeper = None  # a shard does not write the lock (shards would race): merge does
        if ready.lock_path is not None and options.shard is None:
            keeper = LockKeeper(
                ready.lock_path, plan, lock, echo=echo, unread=unread is not None, out_dir=out_dir
            )
        settings = _settings(options, out_dir, callbacks, plan.pricing)
        if stored is not None:
            settings = dataclasses.replace(settings, images=stored.images)
        summary: dict[str, Any] = settings_summary(settings) | {"rpm": options.rpm}
        if options.shard is not None:
            summary["shard"] = f"{options.shard[0]}/{options.shard[1]}"
        summary |= {"only": list(options.only)} if options.only else {}
        summary |= {"limit": options.limit} if options.limit is not None else {}
        summary |= {"regenerate": list(options.regenerate)} if options.regenerate else {}
        summary |= {"max_cost": options.max_cost} if options.max_cost is not None else {}
        run_id = await store.begin_run(
            manifest=plan.name,
            manifest_sha256=plan.manifest_sha256,
            settings=summary,
            planned=len(plan.tasks),
        )
        paying = would_create(plan, records, settings.policy, time.time())
        echo(f"flux-pipeline: this run would create {describe(paying, plan.pricing)}")
        store.start(outer)
        if keeper is not None:
            outer.start_soon(keeper.every, store)
        client = await stack.enter_async_context(
            FluxClient(
                api_key=endpoint.api_key,
                config=_client_config(options, endpoint),
                transport=options.transport,
                budget=budget,
            )
        )
        downloads = await stack.enter_async_context(new_download_client())
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
            stops.attach(engine)
            outcome = await _run_engine(engine, options, callbacks, records)
        finally:
            stops.detach()
            if keeper is not None:
                keeper.stop()
            with anyio.CancelScope(shield=True):
                # not after a signal: the process is asked to end (docs/storage.md)
                publish = bool(outcome and stored and stored.publishing and stops.reason is None)
                if publish:
                    assert stored is not None
                    await stored.publish_outputs(store, out_dir, keeper, lock)
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
                await finish_run(store, plan, out_dir, run_id, outcome, info, keeper, options.shard)
                if publish:
                    assert stored is not None
                    lock_written = keeper.path if keeper is not None else None
                    await stored.publish_reports(out_dir, plan.name, lock_written)
    assert outcome is not None
    return RunResult(outcome=outcome, out_dir=out_dir, state_path=state_path, review=plan.review)


def _read_lock(ready: Prepared) -> Lock | None:
    assert ready.lock_path is not None
    return load_lock(ready.lock_path, plan=ready.plan, out_dir=ready.out_dir)  # exit 2


def _settings(
    options: RunOptions, out_dir: Path, callbacks: _Callbacks | None, pricing: Pricing | None
) -> EngineSettings:
    timing = options.timing or (
        TimingConfig(first_poll=options.sim_task_seconds * 0.6) if options.simulate else None
    )
    return EngineSettings(
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
        max_cost=CostCap(pricing, options.max_cost) if pricing and options.max_cost else None,
        timing=timing or TimingConfig(),
        api_down_after=options.api_down_after,
    )


def _client_config(options: RunOptions, endpoint: Endpoint) -> ClientConfig:
    return ClientConfig(
        base_url=endpoint.base_url,
        # enough for the full request budget at ~0.35 s per answer; httpx scans its whole pool
        # on every request, so a bigger pool only costs CPU
        max_connections=min(64, max(4, options.max_active)),
        retry=options.retry or RetryPolicy(),
    )


async def _run_engine(
    engine: Engine,
    options: RunOptions,
    callbacks: _Callbacks | None,
    records: dict[str, TaskRecord],
) -> RunOutcome:
    """The engine, with the receiver's shutdown and the deadline around it."""
    async with anyio.create_task_group() as tg:
        if options.deadline is not None:
            tg.start_soon(_watch_deadline, engine, options.deadline)
        outcome = await engine.run(records)
        if callbacks is not None:
            await callbacks.server.stop()
        tg.cancel_scope.cancel()
    return outcome


async def _watch_deadline(engine: Engine, seconds: float) -> None:
    await anyio.sleep(seconds)
    engine.request_stop(f"deadline of {seconds:g}s reached")
