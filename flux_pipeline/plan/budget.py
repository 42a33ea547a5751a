"""What one template render may spend: the limits, and how big a value's text would be.

A manifest can come from a pull request, so a template must not be able to exhaust memory or
time. Every render (``templates.render``) runs under a ``Budget``: the sandbox charges it for
every loop iteration (plus the template text the loop body writes), every call, every filter
and every value written out, and checks the clock at each charge. Operations that would build
big text are refused *before* they build it (``check_size`` with ``text_size``), whatever
their inputs. The limits are named here and listed in docs/limits.md.
"""

from __future__ import annotations

import time
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.utils import Namespace

MAX_RESULT = 100_000  # characters (or items) one operation in a template may produce
MAX_RENDER_WORK = 2_000_000  # work units (about one per character or loop step) per render
MAX_RENDER_SECONDS = 2.0  # wall-clock time one render may take
MAX_INT_BITS = 4 * MAX_RESULT  # an integer a template builds has at most this many bits
MAX_PLAN_RENDER_SECONDS = 300.0  # time all the renders of one plan may take together


@dataclass(slots=True)
class Budget:
    """The work done and the deadline of one render."""

    started: float
    deadline: float
    late: str  # what passing the deadline means
    work: int = 0


@dataclass(slots=True)
class PlanBudget:
    """The time the renders of one planning pass took together."""

    seconds: float = 0.0


_CURRENT: ContextVar[Budget | None] = ContextVar("flux_template_budget", default=None)
_PLAN: ContextVar[PlanBudget | None] = ContextVar("flux_plan_budget", default=None)


def start_plan() -> object:
    """Count the render time of a planning pass from now on; pass the token to ``stop_plan``."""
    return _PLAN.set(PlanBudget())


def stop_plan(token: object) -> None:
    _PLAN.reset(token)  # type: ignore[arg-type]


def start(seconds: float = MAX_RENDER_SECONDS) -> object:
    """Start a budget for one render; pass the returned token to ``stop``."""
    now = time.monotonic()
    late = f"the template takes longer than {seconds:g} s to render"
    plan = _PLAN.get()
    if plan is not None and MAX_PLAN_RENDER_SECONDS - plan.seconds < seconds:
        seconds = max(MAX_PLAN_RENDER_SECONDS - plan.seconds, 0.0)
        late = (
            f"the templates of this manifest take longer than {MAX_PLAN_RENDER_SECONDS:g} s "
            "to render in all"
        )
    return _CURRENT.set(Budget(started=now, deadline=now + seconds, late=late))


def stop(token: object) -> None:
    budget = _CURRENT.get()
    plan = _PLAN.get()
    if budget is not None and plan is not None:
        plan.seconds += time.monotonic() - budget.started
    _CURRENT.reset(token)  # type: ignore[arg-type]


def charge(units: int) -> None:
    """Spend ``units`` of the current render's budget; refuse when it is exhausted."""
    budget = _CURRENT.get()
    if budget is None:  # outside a render (compiling): nothing is evaluated there
        return
    budget.work += units
    if budget.work > MAX_RENDER_WORK:
        raise SecurityError(
            f"the template does too much work (more than {MAX_RENDER_WORK} steps or "
            "characters in one render)"
        )
    if time.monotonic() > budget.deadline:
        raise SecurityError(budget.late)


def too_large(what: str = "the result") -> SecurityError:
    return SecurityError(f"{what} would be larger than {MAX_RESULT} characters")


def check_size(estimate: int, what: str = "the result") -> None:
    """Refuse an operation whose result would exceed ``MAX_RESULT``."""
    if estimate > MAX_RESULT:
        raise too_large(what)


def text_size(value: Any, limit: int = MAX_RESULT) -> int:
    """An upper estimate of ``len(str(value))``, computed without building it.

    Containers are walked (a list holding the same long string many times is as long as its
    text would be); the walk stops as soon as the estimate passes ``limit``.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) if item is value else 4 * len(item) + 3  # repr escapes
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping | ItemsView):
            pairs = item.items() if isinstance(item, Mapping) else item
            for key, val in pairs:
                total += 4
                stack.append(key)
                stack.append(val)
                if total > limit:
                    return total
        elif isinstance(item, list | tuple | set | frozenset | KeysView | ValuesView):
            total += 2
            for element in item:
                total += 2
                stack.append(element)
                if total > limit:
                    return total
        elif isinstance(item, Namespace):
            total += 14
            stack.append(dict(item._Namespace__attrs))
        else:
            total += 100
        if total > limit:
            return total
    return total
