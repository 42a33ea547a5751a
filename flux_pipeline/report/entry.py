"""One task of ``report.json``, typed: what the report says about it (docs/reports.md).

A ``TaskEntry`` is made from a planned task and its state DB record (``TaskEntry.of``), written
as one JSON object (``to_json``) and read back (``from_json``). Reports handed to ``merge`` and
``diff`` are untrusted input, so ``from_json`` checks every field and raises one line
(``UsageError``) naming the file and the task: never a KeyError, TypeError or traceback.
The whole file is read and written in ``flux_pipeline/report/reportfile.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NoReturn

from flux_pipeline.errors import UsageError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.states import TaskRecord, TaskState, failure_code

INT_MAX = 2**63 - 1  # SQLite's INTEGER: entries of a merged report go into the state DB
MAX_DEPTH = 64  # how deeply a request shown in a report may nest

Cell = tuple[tuple[str, str], ...]  # (axis, value label) pairs, in readable-id order

_JSON_TYPE = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
_JSON_TYPE |= {list: "a list", dict: "an object", type(None): "null"}


def _kind(value: object) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 60) -> str:
    shown = repr(text)  # one line, whatever the file holds
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


class _Fields:
    """The fields of one JSON object, read with a one-line error for anything unexpected."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise UsageError(f"{where} is {_kind(value)}, not an object")
        self.data: dict[str, object] = value
        self.where = where

    def fail(self, problem: str) -> NoReturn:
        raise UsageError(f"{self.where}: {problem}")

    def value(self, name: str) -> object:
        if name not in self.data:
            self.fail(f"{name!r} is missing")
        return self.data[name]

    def text(self, name: str) -> str:
        value = self.value(name)
        if not isinstance(value, str):
            self.fail(f"{name!r} must be a string, not {_kind(value)}")
        return value

    def text_or_none(self, name: str) -> str | None:
        return None if self.value(name) is None else self.text(name)

    def count(self, name: str) -> int:
        value = self.value(name)
        if isinstance(value, float):
            self.fail(f"{name!r} must be a whole number, not {value!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(f"{name!r} must be a whole number, not {_kind(value)}")
        if not 0 <= value <= INT_MAX:
            self.fail(f"{name!r} is out of range (0 to {INT_MAX})")
        return value

    def count_or_none(self, name: str) -> int | None:
        return None if self.value(name) is None else self.count(name)

    def time_or_none(self, name: str) -> float | None:
        value = self.value(name)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(f"{name!r} must be a number or null, not {_kind(value)}")
        if not math.isfinite(value) or abs(value) > INT_MAX:
            self.fail(f"{name!r} is out of range")
        return value

    def items(self, name: str) -> list[object]:
        value = self.value(name)
        if not isinstance(value, list):
            self.fail(f"{name!r} must be a list, not {_kind(value)}")
        return value


def _check_depth(value: object, fields: _Fields, name: str) -> None:
    """A JSON value nested at most ``MAX_DEPTH`` deep (what json.loads made: no other types)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            fields.fail(f"{name!r} is nested more than {MAX_DEPTH} deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputEntry:
    """One downloaded output image: its path relative to OUT and what it was checked against."""

    path: str
    url: str
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "url": self.url, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: object, where: str) -> OutputEntry:
        fields = _Fields(value, where)
        return cls(
            path=fields.text("path"),
            url=fields.text("url"),
            bytes=fields.count("bytes"),
            sha256=fields.text("sha256"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Timestamps:
    """Our clock (seconds since the epoch) and the API's (``api_*``, as it sent them)."""

    first_submitted: float | None = None
    submitted: float | None = None
    finished: float | None = None
    downloaded: float | None = None
    api_create: int | None = None
    api_complete: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "first_submitted": self.first_submitted,
            "submitted": self.submitted,
            "finished": self.finished,
            "downloaded": self.downloaded,
            "api_create": self.api_create,
            "api_complete": self.api_complete,
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> Timestamps:
        fields = _Fields(value, where)
        return cls(
            first_submitted=fields.time_or_none("first_submitted"),
            submitted=fields.time_or_none("submitted"),
            finished=fields.time_or_none("finished"),
            downloaded=fields.time_or_none("downloaded"),
            api_create=fields.count_or_none("api_create"),
            api_complete=fields.count_or_none("api_complete"),
        )

    def values(self) -> list[float]:
        """Every timestamp that is set."""
        stamps = (self.first_submitted, self.submitted, self.finished, self.downloaded)
        return [float(v) for v in (*stamps, self.api_create, self.api_complete) if v is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskEntry:
    """A task as the report shows it. ``request`` is the display form (a JSON value: local
    images by path and hash); ``cell`` the task's own matrix cell (a chained task's does not
    include its parent's)."""

    readable_id: str
    key: str
    step: str
    parent: str | None = None  # the parent's readable id
    parent_output_index: int | None = None
    cell: Cell = ()
    request: object = None
    state: TaskState = TaskState.PLANNED
    task_id: str | None = None
    fail_code: str | None = None
    fail_msg: str | None = None
    attempts: int = 0
    timestamps: Timestamps = Timestamps()
    cost_time: int | None = None  # ms, as the API reported it
    output: str = ""  # output path relative to OUT, without extension
    outputs: tuple[OutputEntry, ...] = ()

    @classmethod
    def of(
        cls, spec: TaskSpec, record: TaskRecord | None, *, parent: str | None, request: object
    ) -> TaskEntry:
        """The entry of planned task ``spec``; ``record`` is its state DB row (None: none yet)."""
        planned = cls(
            readable_id=spec.readable_id,
            key=spec.key,
            step=spec.step,
            parent=parent,
            parent_output_index=spec.parent_output_index,
            cell=spec.cell,
            request=request,
            output=spec.output,
        )
        if record is None:
            return planned
        return replace(
            planned,
            state=record.state,
            task_id=record.task_id,
            fail_code=record.fail_code,
            fail_msg=record.fail_msg,
            attempts=record.attempts,
            timestamps=Timestamps(
                first_submitted=record.first_submitted_at,
                submitted=record.submitted_at,
                finished=record.finished_at,
                downloaded=record.downloaded_at,
                api_create=record.api_create_time,
                api_complete=record.api_complete_time,
            ),
            cost_time=record.cost_time,
            outputs=tuple(
                OutputEntry(path=o.path, url=o.url, bytes=o.bytes, sha256=o.sha256)
                for o in record.outputs
            ),
        )

    @property
    def failure_code(self) -> str:
        """The code a failed or expired task is filed under (``states.failure_code``)."""
        return failure_code(self.state, self.fail_code)

    @property
    def prompt(self) -> str:
        """The request's prompt, or ``""``."""
        fields = self.request.get("input") if isinstance(self.request, dict) else None
        prompt = fields.get("prompt") if isinstance(fields, dict) else None
        return "" if prompt is None else str(prompt)

    def to_json(self) -> dict[str, object]:
        """The JSON object of report.json (its keys are the report's, e.g. ``taskId``)."""
        return {
            "readable_id": self.readable_id,
            "key": self.key,
            "step": self.step,
            "parent": self.parent,
            "parent_output_index": self.parent_output_index,
            "cell": [[axis, label] for axis, label in self.cell],  # a list: keeps the order
            "request": self.request,
            "state": self.state.value,
            "taskId": self.task_id,
            "failCode": self.fail_code,
            "failMsg": self.fail_msg,
            "attempts": self.attempts,
            "timestamps": self.timestamps.to_json(),
            "costTime": self.cost_time,
            "output": self.output,
            "outputs": [o.to_json() for o in self.outputs],
        }

    @classmethod
    def from_json(cls, value: object, *, source: str, index: int = 0) -> TaskEntry:
        """The entry ``value`` (task number ``index`` of the file ``source``) holds; every
        problem is a one-line ``UsageError`` naming the file and the task."""
        where = f"{source}: task #{index}" if index else f"{source}: a task"
        rid = value.get("readable_id") if isinstance(value, dict) else None
        if isinstance(rid, str):
            where = f"{source}: task {_short(rid)}"
        fields = _Fields(value, where)
        state_text = fields.text("state")
        try:
            state = TaskState(state_text)
        except ValueError:
            names = ", ".join(s.value for s in TaskState)
            fields.fail(f"'state' {_short(state_text)} is none of {names}")
        request = fields.value("request")
        _check_depth(request, fields, "request")
        return cls(
            readable_id=fields.text("readable_id"),
            key=fields.text("key"),
            step=fields.text("step"),
            parent=fields.text_or_none("parent"),
            parent_output_index=fields.count_or_none("parent_output_index"),
            cell=_cell(fields) if "cell" in fields.data else (),  # older reports have none
            request=request,
            state=state,
            task_id=fields.text_or_none("taskId"),
            fail_code=fields.text_or_none("failCode"),
            fail_msg=fields.text_or_none("failMsg"),
            attempts=fields.count("attempts"),
            timestamps=Timestamps.from_json(fields.value("timestamps"), f"{where}: 'timestamps'"),
            cost_time=fields.count_or_none("costTime"),
            output=fields.text("output"),
            outputs=tuple(
                OutputEntry.from_json(o, f"{where}: output #{i}")
                for i, o in enumerate(fields.items("outputs"), start=1)
            ),
        )


def _cell(fields: _Fields) -> Cell:
    pairs = []
    for pair in fields.items("cell"):
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            fields.fail("'cell' must be a list of [axis, value] pairs of strings")
        pairs.append((str(pair[0]), str(pair[1])))
    return tuple(pairs)


def counts_by_state(entries: Iterable[TaskEntry]) -> dict[str, int]:
    """Tasks per state, every state named (zero included), in the order of ``TaskState``."""
    counts: Mapping[TaskState, int] = Counter(e.state for e in entries)
    return {state.value: counts.get(state, 0) for state in TaskState}
