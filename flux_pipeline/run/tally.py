"""The run's outcome buckets (``flux_pipeline.outcome``): every task of the plan in one.

The ledger knows the tasks the engine considered; the chained tasks below a task that did not
get done were never considered: a row of theirs counts by its state, as in the report; without
one (or planned) they are blocked when an ancestor failed, expired or is ambiguous, not
started otherwise. They are planned for every result URL known, as the report plans them
(docs/reports.md), so the buckets add up to the tasks the report shows, bucket by bucket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from flux_pipeline.outcome import BLOCKING, STATE_BUCKET, Bucket, Buckets
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.admission import Admission
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.ledger import Closed, Ledger
from flux_pipeline.run.state_store import StateStore
from flux_pipeline.states import TaskRecord

Chained = Callable[[TaskSpec, int], list[TaskSpec]]


def unreached(
    closed: Iterable[Closed], chained: Chained, records: Mapping[str, TaskRecord]
) -> Counter[Bucket]:
    """The buckets of the tasks below the ``closed`` ones. ``records``: the rows of tasks not
    considered in this run (their result URLs plan their chained tasks; a row's own state
    is its bucket, as in the report). A planned one is blocked when its nearest ancestor
    with a row failed, expired or is ambiguous, else not started."""
    counts: Counter[Bucket] = Counter()
    seen: set[str] = set()
    stack: list[tuple[TaskSpec, bool]] = []

    def below(spec: TaskSpec, urls: tuple[str, ...], blocks: bool) -> None:
        for index in range(max(1, len(urls))):
            stack.extend((child, blocks) for child in chained(spec, index))

    for item in closed:
        below(item.spec, item.urls, item.blocks)
    while stack:
        spec, blocks = stack.pop()
        if spec.key in seen:
            continue
        seen.add(spec.key)
        record = records.get(spec.key)
        bucket = STATE_BUCKET.get(record.state) if record else None
        if bucket is None:
            bucket = Bucket.BLOCKED if blocks else Bucket.NOT_STARTED
        else:
            blocks = bucket in BLOCKING
        counts[bucket] += 1
        below(spec, record.result_urls if record else (), blocks)
    return counts


def final_buckets(
    ledger: Ledger,
    chained: Chained,
    records: Mapping[str, TaskRecord],
    unplanned: Callable[[], int] = lambda: 0,
) -> Buckets:
    """The buckets once the run's task group has ended. ``unplanned``: how many chained tasks
    could not be planned (a template failed for their parent's output): failed, read once
    every chained task has been asked for."""
    settled = ledger.settled
    below = unreached(ledger.closed + ledger.still_open(), chained, records)
    return Buckets(
        done=settled[Bucket.DONE] + below[Bucket.DONE],
        failed=settled[Bucket.FAILED] + below[Bucket.FAILED] + unplanned(),
        blocked=below[Bucket.BLOCKED],
        ambiguous=settled[Bucket.AMBIGUOUS] + below[Bucket.AMBIGUOUS],
        expired=settled[Bucket.EXPIRED] + below[Bucket.EXPIRED],
        # downloads that came out incomplete are in flight too: a rerun downloads them
        in_flight=settled[Bucket.IN_FLIGHT]
        + ledger.busy
        + len(ledger.downloading)
        + below[Bucket.IN_FLIGHT],
        not_started=ledger.queued + len(ledger.waiting) + below[Bucket.NOT_STARTED],
    )


def run_stats(
    ledger: Ledger, store: StateStore, budget: TokenBucket, admission: Admission
) -> dict[str, float]:
    """The engine's numbers for the report (``engine_stats``)."""
    return {
        "store_writes": store.writes,
        "store_batches": store.batches,
        "store_write_seconds": round(store.write_seconds, 4),
        "rate_limited": budget.rate_limits,
        "speculative_429s": admission.speculative_429s,
        "api_requests": budget.acquired,
        "held": len(ledger.held),
        "unexpected_errors": ledger.unexpected,
        "store_failures": len(store.failures),
    }
