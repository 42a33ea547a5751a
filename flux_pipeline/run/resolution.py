"""Ambiguity that resolves itself in callback mode (docs/engine.md, docs/resume.md).

In callback mode each task's callback URL ends in its key (``<receiver>/<key>``). When a
create's answer is lost, the API may still have created the task: then it calls back, naming
the key and the taskId. ``Resolutions`` holds the taskIds offered by such callbacks for the
keys whose create is in progress or lost; the submitter confirms a candidate with one status
call (a forged callback names a taskId the API does not know: the call fails, nothing
changes) and carries on with it. No callback within ``horizon``: the task is held ambiguous.

Only keys being created are listened for, and only ``MAX_CANDIDATES`` distinct taskIds per
key are kept, so callbacks cannot grow memory.
"""

from __future__ import annotations

import anyio

RESOLVE_WAIT_CAP = 180.0  # seconds a lost create waits for its callback, at most
RESOLVE_RECHECK = 1.0  # seconds between two looks at the (learned) horizon while waiting
MAX_CANDIDATES = 4  # distinct taskIds kept per key


class Resolutions:
    def __init__(self) -> None:
        self._candidates: dict[str, list[str]] = {}
        self._tried: dict[str, set[str]] = {}
        self._changed: dict[str, anyio.Event] = {}

    def expect(self, key: str) -> None:
        """``key``'s create is about to be sent: callbacks naming it are kept from now on
        (one may come before the create's answer is known to be lost)."""
        self._candidates.setdefault(key, [])
        self._tried.setdefault(key, set())
        self._changed.setdefault(key, anyio.Event())

    def forget(self, key: str) -> None:
        self._candidates.pop(key, None)
        self._tried.pop(key, None)
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    def offer(self, key: str, task_id: str) -> bool:
        """A callback named ``key`` and ``task_id``. False when nothing waits for ``key``."""
        found = self._candidates.get(key)
        if found is None:
            return False
        if task_id not in found and task_id not in self._tried[key]:
            if len(found) >= MAX_CANDIDATES:
                return False
            found.append(task_id)
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()
        self._changed[key] = anyio.Event()
        return True

    async def next_candidate(self, key: str, *, within: float) -> str | None:
        """The next taskId offered for ``key`` not yet tried, waiting at most ``within`` s."""
        with anyio.move_on_after(within):
            while key in self._candidates:
                found = self._candidates[key]
                if found:
                    task_id = found.pop(0)
                    self._tried[key].add(task_id)
                    return task_id
                await self._changed[key].wait()
        return None

    def named(self, key: str, task_id: str) -> bool:
        """Did a callback already name ``task_id`` for ``key`` (it came before the create's
        answer: the task has finished, poll it now rather than at the sweep)?"""
        return task_id in self._candidates.get(key, ())

    def retry_later(self, key: str, task_id: str) -> None:
        """``task_id`` could not be checked (the API did not answer): offer it again."""
        tried = self._tried.get(key)
        if tried is not None:
            tried.discard(task_id)
            self.offer(key, task_id)
