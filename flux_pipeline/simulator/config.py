"""Configuration of the simulator: every knob, with the upstream page's values as defaults.

The values the create body's fields may take come from the API values table,
``flux_pipeline/api_values.json`` (docs/api-contract.md): a data file, not product code, so the
simulator and ``validate`` accept the same values while the simulator imports nothing of the
product. ``safetyTolerance`` is in the table but accepted as is (it is passed through).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_VALUES_PATH = Path(__file__).parents[1] / "api_values.json"
_FIELDS: dict[str, Any] = json.loads(API_VALUES_PATH.read_text(encoding="utf-8"))["fields"]


def _values(name: str) -> tuple[str, ...]:
    return tuple(_FIELDS[name]["values"])


ASPECT_RATIOS = _values("aspect_ratio")
MODES = _values("mode")
REQUEST_TYPES = _values("request_type")
PROVIDERS = _values("provider")
OUTPUT_FORMATS = _values("output_format")
DEFAULTS: dict[str, str] = {
    name: spec["default"] for name, spec in _FIELDS.items() if isinstance(spec.get("default"), str)
}
MAX_IMAGE_URLS = 10  # not documented upstream: our choice
MAX_REFERENCE_BYTES = 10 * 1024 * 1024  # "max 10MB per image"
FIFTEEN_DAYS = 15 * 24 * 3600.0


@dataclass(frozen=True, kw_only=True)
class Faults:
    """Injected misbehaviour; all off by default. Rates are probabilities in [0, 1].

    ``error_rate``: API requests answered 500/502/503 before any side effect.
    ``drop_rate``: API requests whose connection is closed without a complete answer; with
    ``drop_after`` the request is processed first (a create DOES create its task).
    ``lost_after_rate``: independently of ``drop_rate``, API requests processed first (a create
    DOES create and bill its task) whose connection is then closed without an answer.
    ``gateway_rate``: API requests answered by a "proxy" with a 502/504 HTML page (no API
    envelope) before they reach the API; ``gateway_after_rate``: the same page after the
    request was processed (a create did create its task) — what a gateway timeout looks like.
    ``slow_rate``/``slow_seconds``: API requests delayed by that many (real) seconds.
    ``truncate_rate``: result downloads that advertise the full Content-Length, send part, close.
    ``errors_as_200``: every API error is answered with HTTP 200, the code only in the body.
    ``rate_limit_burst``: the next N API requests are answered 429.
    """

    error_rate: float = 0.0
    drop_rate: float = 0.0
    drop_after: bool = False
    lost_after_rate: float = 0.0
    gateway_rate: float = 0.0
    gateway_after_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    truncate_rate: float = 0.0
    errors_as_200: bool = False
    rate_limit_burst: int = 0

    def __post_init__(self) -> None:
        rates = ("error_rate", "drop_rate", "lost_after_rate", "gateway_rate", "gateway_after_rate")
        for name in (*rates, "slow_rate", "truncate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value!r}")
        if self.slow_seconds < 0:
            raise ValueError(f"slow_seconds must be >= 0, got {self.slow_seconds!r}")
        if self.rate_limit_burst < 0:
            raise ValueError(f"rate_limit_burst must be >= 0, got {self.rate_limit_burst!r}")


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything the simulator does, fixed at start (faults can also change at runtime).

    Durations: a task takes a duration drawn from a normal law of mean ``task_seconds`` and
    standard deviation ``task_spread`` (``None``: a quarter of the mean), truncated to
    ``[min(1, mean/2), mean + 4·spread]``, then multiplied by ``time_scale``. ``rate_window``
    and ``result_ttl`` are not scaled. ``credits=None`` is an unlimited balance.
    """

    api_keys: tuple[str, ...] = ("sim-key",)
    task_seconds: float = 30.0
    task_spread: float | None = None
    time_scale: float = 1.0
    max_concurrent: int = 1000
    rpm: int = 10_000
    rate_window: float = 60.0
    credits: float | None = None
    cost_pro: float = 5.0
    cost_max: float = 10.0
    result_ttl: float = FIFTEEN_DAYS
    block_words: tuple[str, ...] = ()
    unreachable_hosts: tuple[str, ...] = ()
    results_per_task: int = 1
    image_size: int = 256
    image_cache_size: int = 128
    callback_attempts: int = 4
    callback_backoff: float = 0.2  # real seconds before the 2nd attempt, doubled after each
    faults: Faults = field(default_factory=Faults)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("api_keys must name at least one key")
        positive = ("task_seconds", "time_scale", "rate_window")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.task_spread is not None and self.task_spread < 0:
            raise ValueError(f"task_spread must be >= 0, got {self.task_spread!r}")
        for name in ("max_concurrent", "rpm", "results_per_task", "callback_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 16 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be within [16, 4096], got {self.image_size!r}")
        if self.credits is not None and self.credits < 0:
            raise ValueError(f"credits must be >= 0, got {self.credits!r}")
        if self.cost_pro < 0 or self.cost_max < 0:
            raise ValueError("task costs must be >= 0")
        if self.callback_backoff < 0:
            raise ValueError(f"callback_backoff must be >= 0, got {self.callback_backoff!r}")
        if self.result_ttl < 0:
            raise ValueError(f"result_ttl must be >= 0, got {self.result_ttl!r}")

    @property
    def spread(self) -> float:
        return self.task_seconds / 4 if self.task_spread is None else self.task_spread

    @property
    def per_task(self) -> dict[str, float]:
        """Credits per task by mode: the shape of a manifest's ``pricing.per_task``
        (docs/manifest.md#pricing), so a manifest can price the simulator's credits."""
        return {"pro": self.cost_pro, "max": self.cost_max}

    def cost(self, mode: str) -> float:
        return self.per_task.get(mode, self.cost_pro)
