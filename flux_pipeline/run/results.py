"""What the engine reports: a ``Progress`` snapshot while it runs, a ``RunOutcome`` at its end
(``run/engine.py``). ``created`` counts taskIds the API returned (billed), nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flux_pipeline.outcome import Buckets

if TYPE_CHECKING:
    from flux_pipeline.run.engine import EngineSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    total: int
    done: int
    failed: int
    in_flight: int
    downloading: int
    queued: int
    created: int
    requests: int
    rate_limits: int
    elapsed: float


@dataclass(kw_only=True)
class RunOutcome:
    exit_code: int
    buckets: Buckets
    created: int
    elapsed: float
    requests: int
    rate_limits: int
    stop_reason: str | None
    error: str | None
    ambiguous: list[str]
    stats: dict[str, float] = field(default_factory=dict)
    created_modes: dict[str, int] = field(default_factory=dict)  # created (billed), by mode


def settings_summary(settings: EngineSettings) -> dict[str, Any]:
    """Run settings for reports: no secrets (the callback URL carries one, so it is omitted)."""
    return {
        "out_dir": str(settings.out_dir),
        "max_active": settings.max_active,
        "request_type": settings.request_type,
        "retry_failed": settings.policy.retry_failed,
        "resubmit_ambiguous": settings.policy.resubmit_ambiguous,
        "max_new_tasks": settings.max_new_tasks,
    }
