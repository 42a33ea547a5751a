"""Manifest templates: Jinja2 in an immutable sandbox with ``StrictUndefined`` (docs/manifest.md).

Manifests can arrive in pull requests, so templates run in an immutable sandbox
(``sandbox.py``): no access to underscored attributes, no mutating the shared context, nothing
evaluated at compile time, and every render under a budget of work, time and size
(``budget.py``, docs/limits.md): operations that would build huge strings or numbers are
refused before they run, and so is a template rendering more than ``MAX_RENDERED_CHARS``.
Every problem (syntax, undefined name, forbidden access, any other failure while rendering)
comes out as ``TemplateProblem`` with a one-line message; nothing a template does escapes as
another exception.

``compile_template`` caches by source text and returns a plain ``str`` for text without any
Jinja syntax, so the common case costs nothing per task.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.meta
from anyascii import anyascii
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context

from flux_pipeline.plan import budget
from flux_pipeline.plan.budget import MAX_RESULT
from flux_pipeline.plan.sandbox import make_env

MAX_RENDERED_CHARS = MAX_RESULT  # the text one template may render
_MARKERS = ("{{", "{%", "{#")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
SLUG_HASH_CHARS = 8  # the fallback slug: hex digits of the text's SHA-256


class TemplateProblem(Exception):
    """A template that does not compile or does not render; ``str()`` is the message."""


def slug_part(value: Any) -> str:
    """``"Oil Painting!"`` -> ``"oil-painting"``, ``"Αθήνα"`` -> ``"athina"``: lowercase ASCII
    letters, digits and dashes, or ``""`` when nothing of the text transliterates to them.

    Non-ASCII text is transliterated character by character (``anyascii``), so the slugs of
    two texts joined by a dash are the slug of the texts joined by any separator
    (``plan/render.py`` relies on it); ASCII text gives what it always gave (docs/keys.md).
    """
    text = str(value)
    if not text.isascii():  # anyascii gives ASCII text back as it is, at a cost
        # the ellipsis of a long value in a readable id (plan/axes.py ``format_value``) is the
        # common case; anyascii, character by character, gives "..." for it too
        text = text.replace("…", "...")
        if not text.isascii():
            text = anyascii(text)
    return _NOT_SLUG.sub("-", text.lower()).strip("-")


def slug(value: Any) -> str:
    """``slug_part``, never empty: a text with nothing to transliterate (``"___"``, ``"★"``)
    gives the first 8 hex digits of the SHA-256 of its UTF-8 bytes."""
    text = str(value)
    return slug_part(text) or hashlib.sha256(text.encode("utf-8")).hexdigest()[:SLUG_HASH_CHARS]


ENV = make_env({"slug": slug})
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
    token = budget.start()
    try:
        # Template.render() copies the globals into a new dict on every call; ``ctx`` has them
        # already, so build the runtime context directly (three times faster per task).
        runtime = Context(ENV, ctx, template.name, template.blocks, globals=template.globals)
        pieces: list[str] = []
        total = 0
        for piece in template.root_render_func(runtime):
            total += len(piece)
            if total > MAX_RENDERED_CHARS:
                raise TemplateProblem(
                    f"the template renders more than {MAX_RENDERED_CHARS} characters"
                )
            pieces.append(piece)
        return "".join(pieces)
    except jinja2.UndefinedError as exc:
        names = ", ".join(sorted(k for k in ctx if k not in GLOBALS))
        raise TemplateProblem(f"template: {_one_line(exc)} (defined here: {names})") from None
    except SecurityError as exc:
        raise TemplateProblem(f"template refused by the sandbox: {_one_line(exc)}") from None
    except TemplateProblem:
        raise
    except RecursionError:
        raise TemplateProblem("template recursion is too deep") from None
    except MemoryError:
        raise TemplateProblem("template refused: it needs too much memory") from None
    except Exception as exc:  # a template can fail in many ways (1/0, bad filter args, ...)
        raise TemplateProblem(f"template failed: {type(exc).__name__}: {_one_line(exc)}") from None
    finally:
        budget.stop(token)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
