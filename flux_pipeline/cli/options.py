"""Options shared by several commands, and parsers for option values.

Each parser fails with a one-line message naming the option. ``--out`` and ``--state`` are
declared here once (``out_option``, ``state_option``, ``strict_option``) so every command
spells them the same way; each command passes the help text that says what the option means
for it (docs/cli.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from flux_pipeline.plan.shard import parse_shard


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (``nan`` passes every range
    comparison, so ``--rpm nan`` would silently disable the request budget)."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number: float = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


F = TypeVar("F", bound=Callable[..., object])

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '1h30m', '1.5h' -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 5m, 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return total


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Shard(click.ParamType):  # type: ignore[type-arg]
    """``--shard I/N`` -> ``(I, N)``, with a one-line error naming the option."""

    name = "I/N"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_shard(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


MAX_ACTIVE = 1000  # run's defaults for one key: tasks in flight, requests a minute
RPM = 10_000.0


def shard_limits(
    max_active: int | None, rpm: float | None, shard: tuple[int, int] | None
) -> tuple[int, float]:
    """``--max-active`` and ``--rpm`` as one run uses them. They are the API key's limits
    (given, or the defaults); with ``--shard I/N`` each shard takes 1/N of them (tasks in
    flight rounded up, at least 1), so N shards running at once on one key ask for the key's
    limits once, not N times (docs/cli.md)."""
    count = shard[1] if shard is not None else 1
    active = max_active if max_active is not None else MAX_ACTIVE
    return max(1, math.ceil(active / count)), (rpm if rpm is not None else RPM) / count


def out_option(help: str) -> Callable[[F], F]:
    """``--out DIR`` -> parameter ``out_dir`` (a ``Path`` or ``None``: the command picks the
    default, ``layout.default_out_dir``)."""
    return click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=help,
    )


def state_option(help: str) -> Callable[[F], F]:
    """``--state PATH`` -> parameter ``state_path`` (a ``Path`` or ``None``: the command picks
    the default, ``layout.default_state_path``)."""
    return click.option(
        "--state",
        "state_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help,
    )


def lock_options(func: F) -> F:
    """``--lock PATH`` -> ``lock_path`` and ``--no-lock`` -> ``no_lock`` (docs/lockfile.md)."""
    func = click.option(
        "--no-lock",
        is_flag=True,
        help="Neither read nor write the lock file.",
    )(func)
    return click.option(
        "--lock",
        "lock_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Lock file [default: next to the manifest, <manifest stem>.lock.json].",
    )(func)


def lock_path_of(manifest: Path, lock_path: Path | None, no_lock: bool) -> Path | None:
    """The lock file a command reads (None: ``--no-lock``)."""
    from flux_pipeline.report.lockfile import lock_path_for

    if no_lock:
        if lock_path is not None:
            raise click.UsageError("--lock and --no-lock exclude each other")
        return None
    return lock_path or lock_path_for(manifest)


def strict_option(what: str) -> Callable[[F], F]:
    """``--strict``: warnings (values outside the API values table, docs/manifest.md) are
    errors, exit 2, and ``what`` does not happen."""
    return click.option(
        "--strict",
        is_flag=True,
        help=f"Treat warnings (values the API does not document) as errors: exit 2, {what}.",
    )


def echo_warnings(warnings: Iterable[object]) -> None:
    """Print each located warning on stderr (``file:line:col: warning: ...``)."""
    for warning in warnings:
        click.echo(str(warning), err=True)


def selection_options(func: F) -> F:
    """``--only PATTERN`` (repeatable) -> ``only``, ``--limit N`` -> ``limit``,
    ``--regenerate PATTERN`` -> ``regenerate`` and ``--regenerate-rejected`` (plan/selection.py,
    plan/generations.py)."""
    func = click.option(
        "--regenerate-rejected",
        is_flag=True,
        help="Make a new generation of every task the review file rejects (as --regenerate): "
        "new images to review, paid again.",
    )(func)
    func = click.option(
        "--regenerate",
        "regenerate",
        multiple=True,
        metavar="PATTERN",
        help="Make a new generation of these finished tasks (a step id or a glob of readable "
        "ids, repeatable or comma-separated): a new key, paid again; the old image and its "
        "record stay until the new image is downloaded over it. Chained tasks follow.",
    )(func)
    func = click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=None,
        help="Only the first N tasks in plan order (a chained task only with its parent): "
        "a cheap check of a prompt before the whole run.",
    )(func)
    return click.option(
        "--only",
        "only",
        multiple=True,
        metavar="PATTERN",
        help="Only these tasks: a step id or a glob of readable ids (repeatable or "
        "comma-separated); chained tasks follow their parents.",
    )(func)


def review_options(func: F) -> F:
    """``--review PATH`` -> ``review_path`` and ``--no-review`` -> ``no_review``
    (report/reviewfile.py)."""
    func = click.option(
        "--no-review",
        is_flag=True,
        help="Ignore the review file: no decisions (a step with `from.only` then holds every "
        "parent that needs a pick).",
    )(func)
    return click.option(
        "--review",
        "review_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Review file of decisions [default: next to the manifest, "
        "<manifest stem>.review.json, if it exists].",
    )(func)


def review_path_of(manifest: Path, review_path: Path | None, no_review: bool) -> Path | None:
    """The review file a command reads (None: ``--no-review``)."""
    from flux_pipeline.report.reviewfile import review_path_for

    if no_review:
        if review_path is not None:
            raise click.UsageError("--review and --no-review exclude each other")
        return None
    return review_path or review_path_for(manifest)
