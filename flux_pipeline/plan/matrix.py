"""Matrix expansion with GitHub Actions semantics. Pure: values in, combinations out.

The algorithm GitHub documents ("Running variations of jobs in a workflow"):

1. The cartesian product of the axes, in axis order (the first axis varies slowest).
2. ``exclude``: drop every combination that matches an exclude entry; an entry only has to be a
   partial match (every key it names has that value).
3. ``include``, entry by entry: the entry is added to every *original* combination (one that
   came from the product and survived ``exclude``) where none of its key/value pairs would
   overwrite an original axis value. Keys that are not axes are "added" values and may be
   overwritten by later entries. An entry that extends no original combination becomes a new
   combination of its own (and later entries never extend it).

With no axes at all there are no original combinations: each include entry is one combination.

Values are compared through ``match``: an image-set axis holds image objects but exclude and
include entries name them, so the caller passes a function mapping a value to what it is
matched on. Lists are values like any other: they are never expanded implicitly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Combination = dict[str, Any]
Match = Callable[[str, Any], Any]


def _identity(axis: str, value: Any) -> Any:
    return value


def same(a: Any, b: Any) -> bool:
    """Equality as YAML users mean it: ``true`` is not ``1`` and ``"16"`` is not ``16``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def product_size(axes: Sequence[tuple[str, Sequence[Any]]]) -> int:
    """How many combinations the cartesian product has, without building it."""
    return math.prod(len(values) for _, values in axes) if axes else 0


def expand(
    axes: Sequence[tuple[str, Sequence[Any]]],
    *,
    include: Sequence[Mapping[str, Any]] = (),
    exclude: Sequence[Mapping[str, Any]] = (),
    match: Match = _identity,
) -> list[Combination]:
    """Every combination, in GitHub's order: surviving products first, then new includes."""
    names = [name for name, _ in axes]
    original: list[Combination] = []
    if axes:
        for values in itertools.product(*(values for _, values in axes)):
            combination = dict(zip(names, values, strict=True))
            if not any(_matches(combination, entry, match) for entry in exclude):
                original.append(combination)
    axis_names = set(names)
    added: list[Combination] = []
    for entry in include:
        extended = False
        for combination in original:
            if all(
                same(match(key, combination[key]), value)
                for key, value in entry.items()
                if key in axis_names
            ):
                for key, value in entry.items():
                    if key not in axis_names:
                        combination[key] = value
                extended = True
        if not extended:
            added.append(dict(entry))
    return original + added


def _matches(combination: Mapping[str, Any], entry: Mapping[str, Any], match: Match) -> bool:
    return all(
        key in combination and same(match(key, combination[key]), value)
        for key, value in entry.items()
    )
