"""Manifest templates: Jinja2 in an immutable sandbox with ``StrictUndefined`` (docs/manifest.md).

Manifests can arrive in pull requests, so templates run in ``ImmutableSandboxedEnvironment``:
no access to underscored attributes, no mutating the shared context, and arithmetic that would
build huge strings or numbers is refused. Every problem (syntax, undefined name, forbidden
access, any other failure while rendering) comes out as ``TemplateProblem`` with a one-line
message; nothing a template does escapes as another exception.

``compile_template`` caches by source text and returns a plain ``str`` for text without any
Jinja syntax, so the common case costs nothing per task.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RESULT = 100_000  # characters or items a single operation in a template may produce
_MARKERS = ("{{", "{%", "{#")


class TemplateProblem(Exception):
    """A template that does not compile or does not render; ``str()`` is the message."""


def slug(value: Any) -> str:
    """``"Oil Painting!"`` -> ``"oil-painting"``: lowercase ASCII letters, digits and dashes."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator_: str, left: Any, right: Any
    ) -> Any:
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_RESULT
                ):
                    raise SecurityError("the result would be too large")
            return operator.mul(left, right)
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and right > 0
            and max(left.bit_length(), 1) * right > 4 * MAX_RESULT
        ):
            raise SecurityError("the result would be too large")
        return operator.pow(left, right)


ENV = _Sandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
    cache_size=0,
)
ENV.filters["slug"] = slug
GLOBALS: dict[str, Any] = dict(ENV.globals)

Compiled = str | jinja2.Template

_cache: dict[str, Compiled] = {}


def is_template(source: str) -> bool:
    return any(marker in source for marker in _MARKERS)


def compile_template(source: str) -> Compiled:
    """The compiled template, or ``source`` itself when it has no Jinja syntax."""
    cached = _cache.get(source)
    if cached is not None:
        return cached
    if not is_template(source):
        _cache[source] = source
        return source
    try:
        template = ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except Exception as exc:  # anything else the compiler trips on
        raise TemplateProblem(f"template does not compile: {_one_line(exc)}") from None
    _cache[source] = template
    return template


def names_used(source: str) -> set[str]:
    """Top-level names a template reads (``{{ product.name }}`` -> ``{"product"}``)."""
    if not is_template(source):
        return set()
    try:
        return set(jinja2.meta.find_undeclared_variables(ENV.parse(source)))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None


def context(values: Mapping[str, Any]) -> dict[str, Any]:
    """A render context: Jinja's globals (``range``, ``dict``...) plus ``values``.

    Build one per task (or share one between templates): ``render`` never mutates it.
    """
    result = dict(GLOBALS)
    result.update(values)
    return result


def render(template: Compiled, ctx: dict[str, Any]) -> str:
    """Render with ``ctx`` (made by ``context``); every failure becomes ``TemplateProblem``."""
    if isinstance(template, str):
        return template
    try:
        # Template.render() copies the globals into a new dict on every call; ``ctx`` has them
        # already, so build the runtime context directly (three times faster per task).
        runtime = Context(ENV, ctx, template.name, template.blocks, globals=template.globals)
        return "".join(template.root_render_func(runtime))
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(k for k in ctx if k not in GLOBALS))
        raise TemplateProblem(f"template: {_one_line(exc)} (defined here: {names})") from None
    except SecurityError as exc:
        raise TemplateProblem(f"template refused by the sandbox: {_one_line(exc)}") from None
    except TemplateProblem:
        raise
    except RecursionError:
        raise TemplateProblem("template recursion is too deep") from None
    except Exception as exc:  # a template can fail in many ways (1/0, bad filter args, ...)
        raise TemplateProblem(f"template failed: {type(exc).__name__}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
