"""How a run (or a merge, a report, ``status``) ends: buckets that add up, and one exit policy.

Every task of a plan is in exactly one bucket. ``exit_code_for`` is the only place that turns
buckets into an exit code, and ``VERDICT`` the only place that says in words what each code
means; the run's last line, report.md and ``merge`` all use them (``docs/exit-codes.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from flux_pipeline.errors import ExitCode


class Bucket(StrEnum):
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # behind a failed or expired parent
    AMBIGUOUS = "ambiguous"  # create sent, answer lost: may have been billed
    EXPIRED = "expired"
    IN_FLIGHT = "in flight"
    NOT_STARTED = "not started"


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
        """Tasks a rerun of the same command would still work on."""
        return self.in_flight + self.not_started + self.ambiguous

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
    ExitCode.TASKS_FAILED: "finished with failures",
    ExitCode.INVALID: "stopped by an error",
    ExitCode.RESUMABLE: "stopped early (resumable: run the same command again)",
    ExitCode.INTERNAL: "stopped by an internal error",
}


def exit_code_for(buckets: Buckets, *, stopped: bool = False) -> ExitCode:
    """0 every task done; 3 stopped early or work left that a rerun continues; 1 the rest
    finished but some tasks have no images."""
    if stopped or buckets.unfinished:
        return ExitCode.RESUMABLE
    if buckets.failed or buckets.expired or buckets.blocked:
        return ExitCode.TASKS_FAILED
    return ExitCode.OK


def verdict(code: int) -> str:
    try:
        return VERDICT[ExitCode(code)]
    except ValueError:
        return f"exit {code}"
