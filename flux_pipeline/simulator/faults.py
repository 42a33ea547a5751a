"""Fault injection: which API request misbehaves, and how. Seeded, changeable at runtime.

For each API request ``decide()`` is called before anything else happens, so a 5xx or a burst
429 has no side effect. A drop closes the connection without a complete answer: before the
request is processed, or after it with ``drop_after`` (then a create did create its task).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

from flux_pipeline.simulator.config import Faults

SERVER_ERRORS = (500, 502, 503)
GATEWAY_ERRORS = (502, 504)
_FIELDS = {f.name: f for f in dataclasses.fields(Faults)}


@dataclass(frozen=True, slots=True)
class Decision:
    status: int | None = None  # answer at once with this (429 burst or 5xx)
    drop: bool = False
    drop_after: bool = False
    gateway: int | None = None  # answer this status with an HTML page instead of the API
    gateway_after: bool = False  # ... after processing the request
    slow: float = 0.0


NO_FAULT = Decision()


def _coerce(name: str, value: object) -> Any:
    kind = _FIELDS[name].type
    if kind in ("bool", bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if kind in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)


class FaultInjector:
    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.burst_left = faults.rate_limit_burst
        self._rng = random.Random(seed ^ 0xFA17)

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply ``{"name": value}`` changes (ValueError naming the field when invalid)."""
        unknown = sorted(set(changes) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; known: {', '.join(_FIELDS)}")
        values = {name: _coerce(name, value) for name, value in changes.items()}
        faults = dataclasses.replace(self.faults, **values)  # validates ranges
        self.faults = faults
        if "rate_limit_burst" in changes:
            self.burst_left = faults.rate_limit_burst
        return faults

    def snapshot(self) -> dict[str, Any]:
        data = dataclasses.asdict(self.faults)
        data["rate_limit_burst"] = self.burst_left
        return data

    def _hit(self, rate: float) -> bool:
        return rate > 0.0 and (rate >= 1.0 or self._rng.random() < rate)

    def decide(self) -> Decision:
        f = self.faults
        if self.burst_left > 0:
            self.burst_left -= 1
            return Decision(status=429)
        extra = f.lost_after_rate or f.gateway_rate or f.gateway_after_rate
        if not (f.error_rate or f.drop_rate or f.slow_rate or extra):
            return NO_FAULT
        if self._hit(f.error_rate):
            return Decision(status=self._rng.choice(SERVER_ERRORS))
        if self._hit(f.gateway_rate):
            return Decision(gateway=self._rng.choice(GATEWAY_ERRORS))
        drop = self._hit(f.drop_rate)
        slow = f.slow_seconds if self._hit(f.slow_rate) else 0.0
        after = drop and f.drop_after
        if not drop and self._hit(f.lost_after_rate):
            after = True
        if not drop and not after and self._hit(f.gateway_after_rate):
            return Decision(gateway=self._rng.choice(GATEWAY_ERRORS), gateway_after=True, slow=slow)
        return Decision(drop=drop and not f.drop_after, drop_after=after, slow=slow)

    def truncate(self) -> bool:
        return self._hit(self.faults.truncate_rate)
