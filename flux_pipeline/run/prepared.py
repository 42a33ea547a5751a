"""What a run is about, settled before anything opens: ``RunOptions`` (the command's
settings), ``prepare`` (the settings checked, the plan made, shard and selection applied, the
paths picked) and its result ``Prepared``. Kept apart from ``run/runner.py``, which runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import default_out_dir, default_state_path
from flux_pipeline.plan import selection
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.report.lockfile import Lock, load_lock, lock_path_for
from flux_pipeline.report.locktext import file_sha256
from flux_pipeline.report.reviewfile import Review, read_review
from flux_pipeline.run.api import RequestType
from flux_pipeline.run.checks import check_callback_urls, check_step_summary
from flux_pipeline.run.client import RetryPolicy
from flux_pipeline.run.lock_memo import LockMemo, read_memo
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.run.storage import StorageSettings, require_boto3, storage_settings


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
    review_path: Path | None = None  # the review file (report/reviewfile.py); None: none
    strict: bool = False  # warnings are errors (exit 2) before anything starts
    only: tuple[str, ...] = ()  # --only patterns, --limit N (plan/selection.py)
    limit: int | None = None
    regenerate: tuple[str, ...] = ()  # --regenerate patterns (plan/generations.py)
    regenerate_rejected: bool = False  # and the tasks the review file rejects
    max_cost: float | None = None  # --max-cost: needs the manifest's pricing (plan/cost.py)
    # --storage-bucket/-prefix/-endpoint over the manifest's storage, --publish (docs/storage.md)
    storage: dict[str, str | None] = field(default_factory=dict)
    publish: bool = False


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """What a run is about, known before anything is opened: the plan and the paths."""

    plan: Plan  # the manifest's plan (a shard of it with --shard); the runner focuses it
    out_dir: Path
    state_path: Path
    lock_path: Path | None = None  # None: --no-lock
    lock: Lock | None = None  # the lock file read (None: none yet, or ``lock_unread``)
    # the lock file is the text the state DB's memo covers: not read (run/lock_memo.py)
    lock_unread: LockMemo | None = None
    storage: StorageSettings | None = None  # the bucket (run/storage.py); None: no storage
    review: Review | None = None  # the review file read (report/reviewfile.py); None: none


def covered_lock(lock_path: Path | None, manifest: str, state_path: Path) -> LockMemo | None:
    """The state DB's lock memo, when the file at ``lock_path`` is the text it covers (of
    this manifest): then the lock need not be read (run/lock_memo.py); else None."""
    if lock_path is None or (memo := read_memo(state_path)) is None or memo.manifest != manifest:
        return None
    return memo if file_sha256(lock_path) == memo.sha256 else None


def check_options(options: RunOptions) -> None:
    """The settings that need no manifest (``UsageError``, exit 2): callback addresses, the
    step summary file."""
    if options.request_type == "callback":
        check_callback_urls(options.listen, options.public_url)
    check_step_summary(os.environ.get("GITHUB_STEP_SUMMARY"))


def prepare(options: RunOptions) -> Prepared:
    """Check the settings, plan the manifest, pick the paths. Nothing is opened yet: called
    before the simulator starts and before the progress display shows anything."""
    check_options(options)
    plan = load_plan(options.manifest, strict=options.strict)
    if options.shard is not None:
        from flux_pipeline.plan.shard import select

        plan = select(plan, *options.shard)
    # the patterns are checked now (exit 2 before anything opens); they are applied once the
    # state is known (plan/focus.py, in run/runner.py): a regeneration changes keys
    selection.check_patterns(plan, options.only, "--only")
    selection.check_patterns(plan, options.regenerate, "--regenerate")
    # the review file read and checked now (exit 2 on a bad file), applied with the focus
    review = (
        read_review(options.review_path, manifest=plan.manifest_path.name)
        if (options.review_path is not None)
        else None
    )
    out_dir = options.out_dir or default_out_dir(plan.name)
    state_path = options.state_path or default_state_path(out_dir, options.shard)
    lock_path = None if options.no_lock else options.lock_path or lock_path_for(options.manifest)
    if options.max_cost is not None and plan.pricing is None:
        raise UsageError("--max-cost needs a pricing section in the manifest (docs/manifest.md)")
    storage = storage_settings(
        plan.storage, flags=options.storage, environ=os.environ, publish=options.publish
    )
    if storage is not None:
        require_boto3()  # exit 2 with the extra to install, before anything starts
    # with a bucket the lock's objects are needed: it is always read
    unread = covered_lock(lock_path, plan.name, state_path) if storage is None else None
    lock = load_lock(lock_path, plan=plan, out_dir=out_dir) if lock_path and not unread else None
    return Prepared(
        plan=plan,
        out_dir=out_dir,
        state_path=state_path,
        lock_path=lock_path,
        lock=lock,
        lock_unread=unread,
        storage=storage,
        review=review,
    )
