"""The task store and the task lifecycle: pending → processing → success | failed.

A task's state is a function of its timestamps and the clock (``Task.state``): nothing runs per
task. The side effects of a state change (state counts, per-key concurrency, callbacks) happen in
``TaskStore.settle(now)``, which pops due events from one heap; the background loop calls it
when the next event falls due and every request handler calls it first, so what a client sees
and what the counters say always agree.

A task whose reference images are still being fetched when its time is up stays ``processing``
until the check ends; it then completes at that moment (``costTime`` grows accordingly).
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from flux_pipeline.simulator.images import EXTENSIONS
from flux_pipeline.simulator.validation import CreateRequest

PENDING, PROCESSING, SUCCESS, FAILED = "pending", "processing", "success", "failed"
STATES = (PENDING, PROCESSING, SUCCESS, FAILED)
CONTENT_VIOLATION = ("CONTENT_VIOLATION", "Content does not meet safety guidelines")
INVALID_IMAGE_URL = "INVALID_IMAGE_URL"
_START, _COMPLETE = 0, 1


def ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(slots=True, eq=False)
class Task:
    task_id: str
    api_key: str
    request: CreateRequest
    base_url: str
    created: float
    started: float
    due: float
    fail: tuple[str, str] | None = None
    checks_pending: int = 0
    overdue: bool = False  # its time came while reference checks were still running
    completed: float | None = None  # set when its completion side effects have run
    problem: str | None = None  # debug detail behind a failure
    digest: bytes = b""  # of the canonical input (duplicate creates; kept across restarts)
    row: int = 0  # its row in a state file (``persist.py``), 0 when not kept

    def state(self, now: float) -> str:
        if self.completed is not None or (self.checks_pending == 0 and now >= self.due):
            return FAILED if self.fail else SUCCESS
        return PENDING if now < self.started else PROCESSING

    @property
    def complete_time(self) -> float:
        return self.completed if self.completed is not None else self.due

    def result_urls(self, results: int) -> list[str]:
        ext = EXTENSIONS[self.request.output_format]
        return [f"{self.base_url}/results/{self.task_id}/{i}.{ext}" for i in range(results)]

    def status_data(self, now: float, results: int) -> dict[str, Any]:
        """The ``data`` object of a status answer, with only the fields the doc shows."""
        state = self.state(now)
        data: dict[str, Any] = {"taskId": self.task_id, "state": state}
        if state == SUCCESS:
            data["resultJson"] = json.dumps(
                {"resultUrls": self.result_urls(results)}, separators=(",", ":")
            )
        elif state == FAILED and self.fail:
            data["failCode"], data["failMsg"] = self.fail
        create_ms = ms(self.created)
        data["createTime"] = create_ms
        if state in (SUCCESS, FAILED):
            complete_ms = ms(self.complete_time)
            data["completeTime"] = complete_ms
            data["costTime"] = complete_ms - create_ms
        return data


@dataclass(slots=True)
class _KeyLoad:
    unfinished: int = 0
    dues: list[tuple[float, int, Task]] = field(default_factory=list)


class TaskStore:
    """All tasks by id, the event heap, state counts and per-key concurrency."""

    def __init__(
        self,
        *,
        task_seconds: float,
        spread: float,
        time_scale: float,
        seed: int,
        on_finish: Callable[[Task], None] = lambda task: None,
    ) -> None:
        self.task_seconds = task_seconds
        self.spread = spread
        self.time_scale = time_scale
        self.on_finish = on_finish
        self.tasks: dict[str, Task] = {}
        self.counts = dict.fromkeys(STATES, 0)
        self.max_unfinished = 0
        self._rng = random.Random(seed)
        self._ids = random.Random(seed ^ 0x5EED)
        self._heap: list[tuple[float, int, int, Task]] = []
        self._seq = count()
        self._load: dict[str, _KeyLoad] = {}

    # -- creation -------------------------------------------------------------------------

    def draw_durations(self) -> tuple[float, float]:
        """(pending seconds, total seconds), scaled; a truncated normal law."""
        mean, spread = self.task_seconds, self.spread
        floor, ceiling = min(1.0, mean / 2), mean + 4 * spread
        total = self._rng.gauss(mean, spread) if spread > 0 else mean
        total = min(max(total, floor), ceiling)
        pending = total * self._rng.uniform(0.03, 0.1)
        return pending * self.time_scale, total * self.time_scale

    def new_id(self) -> str:
        while True:
            task_id = f"task_{self._ids.getrandbits(64):016x}"
            if task_id not in self.tasks:
                return task_id

    def unfinished(self, api_key: str) -> int:
        load = self._load.get(api_key)
        return load.unfinished if load else 0

    @property
    def total_unfinished(self) -> int:
        return self.counts[PENDING] + self.counts[PROCESSING]

    def add(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        self.counts[PENDING] += 1
        load = self._load.setdefault(task.api_key, _KeyLoad())
        load.unfinished += 1
        seq = next(self._seq)
        heapq.heappush(load.dues, (task.due, seq, task))
        heapq.heappush(self._heap, (task.started, seq, _START, task))
        heapq.heappush(self._heap, (task.due, seq, _COMPLETE, task))
        self.max_unfinished = max(self.max_unfinished, self.total_unfinished)

    def restore(self, task: Task) -> None:
        """A task from a saved state: a finished one only counts; the others are added as
        new ones (events already due are settled by the next ``settle``)."""
        if task.completed is None:
            self.add(task)
            return
        self.tasks[task.task_id] = task
        self.counts[FAILED if task.fail else SUCCESS] += 1
        self._load.setdefault(task.api_key, _KeyLoad())

    def reseed_ids(self, seed: str) -> None:
        """After a restart: ids never repeat those handed out before, even unsaved ones."""
        self._ids = random.Random(seed)

    def seconds_until_slot(self, api_key: str, now: float) -> float:
        """How long until one of this key's unfinished tasks is expected to finish."""
        load = self._load.get(api_key)
        if load is None:
            return 0.0
        dues = load.dues
        while dues and dues[0][2].completed is not None:
            heapq.heappop(dues)
        return max(0.0, dues[0][0] - now) if dues else 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def settle(self, now: float) -> None:
        """Run the side effects of every event due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, kind, task = heapq.heappop(heap)
            if kind == _START:
                self.counts[PENDING] -= 1
                self.counts[PROCESSING] += 1
            elif task.checks_pending:
                task.overdue = True
            else:
                self._finish(task, task.due)

    def check_done(self, task: Task, problem: str | None, now: float) -> None:
        """A reference-image check ended; a problem makes the task fail."""
        task.checks_pending -= 1
        if problem and task.fail is None:
            task.fail = (INVALID_IMAGE_URL, "Cannot access provided image URL")
            task.problem = problem
        if task.checks_pending == 0 and task.overdue:
            task.due = max(task.due, now)
            self._finish(task, task.due)

    def _finish(self, task: Task, when: float) -> None:
        task.completed = when
        self.counts[PROCESSING] -= 1
        self.counts[FAILED if task.fail else SUCCESS] += 1
        self._load[task.api_key].unfinished -= 1
        self.on_finish(task)
