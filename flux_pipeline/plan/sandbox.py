"""The Jinja2 environment templates run in: an immutable sandbox with budgets (budget.py).

On top of ``ImmutableSandboxedEnvironment`` (no underscored attributes, no mutation):

- nothing is evaluated while compiling: the optimizer's constant folding is off and output
  expressions are never folded into constants (``{{ 'x'|center(2000000000) }}`` would run in
  the compiler, before any sandbox check);
- every ``for`` loop is charged per iteration (plus the template text its body writes), every
  call, filter and written value is charged, and the clock is checked at each charge;
- operations that build text check the size of their result first: ``*``, ``+``, ``%`` and
  ``~`` on strings, ``str.format`` (field widths and total), string methods (``center``,
  ``ljust``, ``rjust``, ``zfill``, ``expandtabs``, ``join``, ``replace``, ``translate``) and
  the filters that pad, repeat or stringify (``center``, ``indent``, ``format``, ``join``,
  ``replace``, ``wordwrap``, ``batch``, ``slice``, ``string``, ``tojson``, ...);
- ``range`` is the sandbox's (at most 100,000 items) and ``lipsum`` is capped.
"""

from __future__ import annotations

import functools
import operator
import re
import string
from _string import formatter_field_name_split  # type: ignore[import-not-found]
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

from flux_pipeline.plan.budget import (
    MAX_INT_BITS,
    MAX_RESULT,
    charge,
    check_size,
    text_size,
    too_large,
)

LOOP_FILTER = "flux_pipeline_loop"  # wraps the iterable of every for loop (``_parse``)
MAX_LIPSUM_PARAGRAPHS = 100
MAX_LIPSUM_WORDS = 100
_DIGITS = re.compile(r"\d+")
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
# filters whose result is (about) the text of their first argument: its size is checked first
_STRINGIFYING = frozenset(
    {
        "capitalize", "e", "escape", "forceescape", "lower", "safe", "string", "striptags",
        "title", "tojson", "trim", "truncate", "upper", "urlencode", "urlize", "wordcount",
        "xmlattr", "slug", "center", "indent", "replace", "wordwrap", "format",
    }
)  # fmt: skip


def _big_number(text: str) -> bool:
    return len(text) > 6 or int(text) > MAX_RESULT


def _check_spec(spec: str) -> None:
    """Refuse a format spec (``>2000000000``, ``.999999f``) with a width over the limit."""
    if any(_big_number(digits) for digits in _DIGITS.findall(spec)):
        raise too_large("the formatted field")


def check_percent(fmt: str, args: Any) -> None:
    """Refuse ``fmt % args`` (and the ``format`` filter) when its result would be too big."""
    star = False
    for match in _PERCENT.finditer(fmt):
        for number in match.groups():
            if number == "*":
                star = True
            elif number and _big_number(number):
                raise too_large("the formatted string")
    if star:
        values = args.values() if isinstance(args, dict) else args
        items = values if isinstance(values, tuple | list) else (values,)
        if any(isinstance(v, int) and abs(v) > MAX_RESULT for v in items):
            raise too_large("the formatted string")
    check_size(len(fmt) + text_size(args), "the formatted string")


class _Formatter(string.Formatter):
    """``str.format`` in the sandbox: sandboxed field lookup, bounded widths and total."""

    def __init__(self, env: _Sandbox) -> None:
        super().__init__()
        self._env = env
        self._total = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._total = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        first, rest = formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, i in rest:
            obj = self._env.getattr(obj, i) if is_attr else self._env.getitem(obj, i)
        return obj, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_spec(format_spec)
        self._total += text_size(value)
        check_size(self._total, "the formatted string")
        result = super().format_field(value, format_spec)
        charge(len(result))
        return result


def _guard_loop(iterable: Iterable[Any], weight: int) -> Iterator[Any]:
    charge(1)
    for item in iterable:
        charge(weight)
        yield item


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if not all(isinstance(v, int) for v in (n, min, max)) or not (
        0 <= n <= MAX_LIPSUM_PARAGRAPHS and 0 < min <= max <= MAX_LIPSUM_WORDS
    ):
        raise SecurityError(
            f"lipsum: at most {MAX_LIPSUM_PARAGRAPHS} paragraphs of at most "
            f"{MAX_LIPSUM_WORDS} words"
        )
    return str(generate_lorem_ipsum(n=n, html=html, min=min, max=max))


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 1


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1 if isinstance(text, str) else 1


def _precheck(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a filter call whose result would be too large, before it runs."""
    value = args[0] if args else None
    if name in _STRINGIFYING:
        check_size(text_size(value), f"the text of the value given to `{name}`")
    arg = args[1] if len(args) > 1 else None
    if name == "center":
        width = arg if arg is not None else kwargs.get("width", 80)
        if isinstance(width, int):
            check_size(max(width, 0))
    elif name == "indent":
        width = arg if arg is not None else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        check_size(text_size(value) + max(per_line, 0) * _lines(value))
    elif name == "format":
        check_percent(str(value), args[1:] or kwargs)
    elif name == "replace":
        old = args[1] if len(args) > 1 else kwargs.get("old", "")
        new = args[2] if len(args) > 2 else kwargs.get("new", "")
        text = str(value)
        count = text.count(str(old)) if str(old) else len(text) + 1
        check_size(len(text) + count * len(str(new)))
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring") if len(args) < 5 else args[4]
        text = str(value)
        lines = len(text.split()) + len(text) // max(int(arg or kwargs.get("width", 79)), 1)
        check_size(len(text) + (len(str(wrap)) if wrap else 1) * (lines + 1))
    elif name in ("batch", "slice"):
        count = arg if arg is not None else kwargs.get("linecount", kwargs.get("slices", 0))
        if isinstance(count, int) and count > MAX_RESULT:
            raise too_large(f"the result of `{name}`")
    elif name == "pprint":
        check_size(100 * text_size(value, MAX_RESULT // 100 + 1), "the result of `pprint`")


def _join(
    original: Callable[..., Any], eval_ctx: Any, value: Any, d: str = "", attribute: Any = None
) -> Any:
    items = list(value)
    if attribute is not None:
        items = [make_attrgetter(eval_ctx.environment, attribute)(item) for item in items]
    total = len(str(d)) * max(len(items) - 1, 0)
    for item in items:
        total += text_size(item)
        check_size(total, "the joined text")
    check_size(total, "the joined text")
    return original(eval_ctx, items, d)


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        charge(1)
        if name == "join":
            result = _join(func, *args, **kwargs)
        else:
            _precheck(name, args[skip:], kwargs)
            result = func(*args, **kwargs)
        charge(_size(result))
        return result

    return guarded


def _check_method(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a string method call that would build too much text; returns the args to use."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if not isinstance(owner, str | bytes):
        return args
    first = args[0] if args else None
    if name in _PADDING_METHODS:
        width = first if first is not None else kwargs.get("width")
        if isinstance(width, int):
            check_size(width)
    elif name == "expandtabs":
        size = first if first is not None else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            check_size(len(owner) + tabs * size)
    elif name == "join" and first is not None:
        items = list(first)
        lengths = sum(len(i) if isinstance(i, str | bytes) else 0 for i in items)
        check_size(lengths + len(owner) * max(len(items) - 1, 0), "the joined text")
        return (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = owner.count(old) if old else len(owner) + 1
        check_size(len(owner) + count * len(new))
    elif name == "translate" and isinstance(first, dict):
        longest = max((text_size(v) for v in first.values()), default=1)
        check_size(len(owner) * max(longest, 1))
    return args


class _CodeGenerator(CodeGenerator):
    """Folds nothing at compile time and checks the size of every ``~`` concatenation."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_join({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(optimized=False, finalize=_finalize, **options)
        for name, func in list(self.filters.items()):
            self.filters[name] = _guarded_filter(name, func)
        self.filters[LOOP_FILTER] = _guard_loop
        self.globals["lipsum"] = _lipsum

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            weight = 1 + sum(len(data.data) for data in loop.find_all(nodes.TemplateData))
            loop.iter = nodes.Filter(
                loop.iter, LOOP_FILTER, [nodes.Const(weight)], [], None, None,
                lineno=loop.iter.lineno,
            )  # fmt: skip
        return tree

    def checked_join(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        check_size(sum(text_size(part) for part in parts), "the concatenation")
        result = join(parts)
        charge(len(result))
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if getattr(value, "__name__", None) not in ("format", "format_map") or not isinstance(
            getattr(value, "__self__", None), str
        ):
            return None
        f_self: str = value.__self__
        is_map = value.__name__ == "format_map"
        formatter = _Formatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return str(formatter.vformat(f_self, (), args[0]))
            return str(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        charge(1)
        args = _check_method(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        charge(_size(result))
        return result

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        charge(1)
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    check_size(len(seq) * times)
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise SecurityError("the number would be too large")
            result = operator.mul(left, right)
        elif operator_ == "+":
            if isinstance(left, str | bytes | list | tuple) and isinstance(right, type(left)):
                check_size(len(left) + len(right))
            result = operator.add(left, right)
        elif operator_ == "%":
            if isinstance(left, str):
                check_percent(left, right)
            result = operator.mod(left, right)
        else:
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and max(left.bit_length(), 1) * right > MAX_INT_BITS
            ):
                raise SecurityError("the number would be too large")
            result = operator.pow(left, right)
        charge(_size(result))
        return result


def _finalize(value: Any) -> Any:
    """Every value a template writes out: its text is checked, then charged."""
    size = text_size(value)
    check_size(size, "a value written by the template")
    charge(size)
    return value


def make_env(filters: dict[str, Callable[..., Any]]) -> jinja2.Environment:
    """The environment of manifest templates, with ``filters`` added (guarded like the rest)."""
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=0,
    )
    for name, func in filters.items():
        env.filters[name] = _guarded_filter(name, func)
    return env
