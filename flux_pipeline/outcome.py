"""How a run (or a merge, a report, ``status``) ends: buckets that add up, and one exit policy.

Every task of a plan is in exactly one bucket. ``exit_code_for`` is the only place that turns
buckets into an exit code, and ``VERDICT`` the only place that says in words what each code
means; the run's last line, report.md and ``merge`` all use them (``docs/exit-codes.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import StrEnum

from flux_pipeline.errors import ExitCode
from flux_pipeline.states import TaskState


class Bucket(StrEnum):
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # behind a failed, expired or ambiguous parent: a rerun does not start it
    AMBIGUOUS = "ambiguous"  # create sent, answer lost: may have been billed
    EXPIRED = "expired"
    IN_FLIGHT = "in flight"
    NOT_STARTED = "not started"


# The bucket of a task by its recorded state, one rule for the run (run/tally.py), the report
# (report/reportfile.py) and merge. A ``planned`` task (or one with no row) is not here: it is
# blocked behind an ancestor in a ``BLOCKING`` bucket, else not started.
STATE_BUCKET: dict[TaskState, Bucket] = {
    TaskState.DOWNLOADED: Bucket.DONE,
    TaskState.FAILED: Bucket.FAILED,
    TaskState.EXPIRED: Bucket.EXPIRED,
    TaskState.SUBMITTING: Bucket.AMBIGUOUS,
    TaskState.SUBMITTED: Bucket.IN_FLIGHT,
    TaskState.SUCCEEDED: Bucket.IN_FLIGHT,  # its files are downloaded by the next run
}
BLOCKING = frozenset({Bucket.FAILED, Bucket.EXPIRED, Bucket.AMBIGUOUS})


@dataclass(frozen=True, slots=True, kw_only=True)
class Buckets:
    done: int = 0
    failed: int = 0
    blocked: int = 0
    ambiguous: int = 0
    expired: int = 0
    in_flight: int = 0
    not_started: int = 0

    @classmethod
    def of(cls, counts: dict[Bucket, int]) -> Buckets:
        return cls(**{b.name.lower(): n for b, n in counts.items()})

    def items(self) -> list[tuple[Bucket, int]]:
        """(bucket, count) in the fixed order, zero counts included."""
        return [(Bucket[f.name.upper()], getattr(self, f.name)) for f in fields(self)]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.items())

    @property
    def unfinished(self) -> int:
        """Tasks a rerun of the same command would still work on. Not the ambiguous ones: a
        rerun holds them (only ``--resubmit-ambiguous`` creates them again)."""
        return self.in_flight + self.not_started

    def check(self, planned: int) -> None:
        """The buckets must account for every task of the plan, each once."""
        if self.total != planned:
            raise AssertionError(f"buckets {self} sum to {self.total}, the plan has {planned}")

    def summary(self) -> str:
        """'3 done, 1 failed' (non-zero buckets only), or 'nothing to do'."""
        parts = [f"{n} {b.value}" for b, n in self.items() if n]
        return ", ".join(parts) or "nothing to do"


VERDICT: dict[ExitCode, str] = {
    ExitCode.OK: "all done",
    ExitCode.TASKS_FAILED: "finished with failures",  # or ambiguous tasks held
    ExitCode.INVALID: "stopped by an error",
    ExitCode.RESUMABLE: "stopped early (resumable: run the same command again)",
    ExitCode.INTERNAL: "stopped by an internal error",
}


def exit_code_for(buckets: Buckets, *, stopped: bool = False) -> ExitCode:
    """3 exactly when running the same command again makes progress: tasks in flight or not
    started, or ``stopped`` (the caller knows of other work a rerun does, e.g. output files
    to fetch again); else 1 when some tasks have no images (failed, expired, blocked, or
    ambiguous: held until ``--resubmit-ambiguous``); else 0 (docs/exit-codes.md)."""
    if stopped or buckets.unfinished:
        return ExitCode.RESUMABLE
    if buckets.failed or buckets.expired or buckets.blocked or buckets.ambiguous:
        return ExitCode.TASKS_FAILED
    return ExitCode.OK


SHOWN_AMBIGUOUS = 5  # readable ids named in the one-line message
AMBIGUOUS_RESUBMITS = 2  # --resubmit-ambiguous: creates again of one task whose answer is lost


def ambiguous_message(ids: Sequence[str], *, shown: int = SHOWN_AMBIGUOUS) -> str:
    """The one message about held ambiguous tasks (run, report.md, ``status``): how many,
    which, and the most ``--resubmit-ambiguous`` bills (one create each; up to
    ``1 + AMBIGUOUS_RESUBMITS`` when answers keep getting lost). Empty when there are none."""
    again = 1 + AMBIGUOUS_RESUBMITS
    count = len(ids)
    if not count:
        return ""
    listed = ", ".join(sorted(ids)[:shown])
    if count > shown:
        listed += f" and {count - shown} more"
    worst = count * again
    more = f" ({worst} if every answer is lost again)" if worst > count else ""
    return (
        f"{count} ambiguous task(s) held (create sent, answer lost: may have been billed): "
        f"{listed}. A rerun does not create them again; --resubmit-ambiguous creates them "
        f"again: at most {count} more task(s) billed{more}"
    )


def verdict(code: int) -> str:
    try:
        return VERDICT[ExitCode(code)]
    except ValueError:
        return f"exit {code}"
