"""The API values table (``flux_pipeline/api_values.json``, docs/api-contract.md): what the API
documents or is known to accept for ``request_type``, ``provider``, ``mode``,
``output_format``, ``aspect_ratio`` and ``safetyTolerance``.

One data file, read here for the manifest (the models' checks and the JSON schema's
``enum``/``examples``, the located warnings of ``plan/steps.py`` and ``plan/render.py``) and by
the simulator (``simulator/config.py``), which imports nothing of the product. A field whose
values are *certain* (documented, or all the product can handle) is an ``enum``: another value
is an error. For the others the API may accept more than the table knows: another value is a
warning (an error with ``--strict``), and the schema lists the table as ``examples``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).parents[1] / "api_values.json"


@dataclass(frozen=True, slots=True)
class ApiField:
    name: str
    place: str  # "body" (top level of the create body) or "input"
    values: tuple[str, ...]  # () for a number range
    default: str | None
    certain: bool
    minimum: int | None = None
    maximum: int | None = None

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the table, or None."""
        if self.values:
            if isinstance(value, str) and value in self.values:
                return None
            listed = ", ".join(repr(v) for v in self.values)
            return (
                f"{value!r} is not a value the API documents or is known to accept "
                f"(one of {listed})"
            )
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (self.minimum is None or value >= self.minimum)
            and (self.maximum is None or value <= self.maximum)
        ):
            return None
        return (
            f"{value!r} is not a value the API documents or is known to accept "
            f"(an integer from {self.minimum} to {self.maximum})"
        )


def _load() -> dict[str, ApiField]:
    raw: dict[str, Any] = json.loads(TABLE_PATH.read_text(encoding="utf-8"))["fields"]
    return {
        name: ApiField(
            name=name,
            place=str(spec["in"]),
            values=tuple(spec.get("values", ())),
            default=spec.get("default"),
            certain=bool(spec["certain"]),
            minimum=spec.get("minimum"),
            maximum=spec.get("maximum"),
        )
        for name, spec in raw.items()
    }


API_VALUES: Mapping[str, ApiField] = _load()
INPUT_CHECKED = tuple(
    name for name, f in API_VALUES.items() if f.place == "input" and not f.certain
)  # input fields whose values are checked per task, as warnings


def values_of(name: str) -> tuple[str, ...]:
    return API_VALUES[name].values


def input_warnings(input_: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, problem)`` for each uncertain input field of ``input_`` outside the table."""
    found: list[tuple[str, str]] = []
    for name in INPUT_CHECKED:
        if name in input_ and input_[name] is not None:
            problem = API_VALUES[name].problem(input_[name])
            if problem is not None:
                found.append((name, problem))
    return found


WARNING_HINT = "the API may accept it; --strict makes this an error"
