"""YAML text -> plain data plus where each value came from.

``load_yaml`` composes the document with PyYAML's *safe* loader (never ``yaml.load`` of
arbitrary tags), then builds plain ``dict``/``list``/scalar values itself so that it can:

- record the 1-based (line, column) of every value and every mapping key, by path
  (``("steps", 0, "prompt")``);
- reject duplicate mapping keys (PyYAML silently keeps the last one);
- keep mapping keys as the text the user wrote (``on:`` is the key ``"on"``, not ``True``);
- keep a plain scalar where ``as_text(path)`` says so (the manifest: ``vars`` and matrix
  values) as the text the user wrote: ``no`` stays ``"no"``, ``1.10`` stays ``"1.10"``, ``012``
  stays ``"012"`` (docs/manifest.md, "Values as written");
- refuse recursive aliases and alias bombs instead of looping or exhausting memory.

Every problem becomes a located ``Diagnostic``; nothing here raises anything but
``ManifestError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from flux_pipeline.errors import Diagnostic, ManifestError

Path_ = tuple[str | int, ...]

try:  # libyaml composes several times faster; fall back to the pure-Python loader
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"

# An alias bomb ("billion laughs") expands a small file into a huge tree: cap the values built.
MAX_VALUES = 200_000


@dataclass(slots=True)
class Located:
    """A YAML document as plain data, plus the location of every value and mapping key."""

    data: Any
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Location of the value at ``path`` (or of its key), else of the nearest ancestor."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        for end in range(len(path) - 1, -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return (1, 1)

    def diag(self, path: Path_, message: str, *, key: bool = False) -> Diagnostic:
        line, column = self.where(path, key=key)
        return Diagnostic(file=self.file, line=line, column=column, message=one_line(message))


_LINE_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def one_line(message: str) -> str:
    """``message`` with control characters and line breaks escaped: one diagnostic, one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], message)


def _mark(node: yaml.Node) -> tuple[int, int]:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


AsText = Callable[[Path_], bool]
"""Whether the plain scalars at a path are kept as the text the user wrote."""


def _never(path: Path_) -> bool:
    return False


_CORE_TAGS = frozenset({_STR, _NULL, _BOOL, _INT, _FLOAT, _TIMESTAMP})


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, out: Located, as_text: AsText = _never) -> None:
        self.loader = loader
        self.out = out
        self.as_text = as_text
        self.errors: list[Diagnostic] = []
        self.count = 0
        self.active: set[int] = set()

    def error(self, node: yaml.Node, message: str) -> None:
        line, column = _mark(node)
        self.errors.append(
            Diagnostic(file=self.out.file, line=line, column=column, message=one_line(message))
        )

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _TooBig(node)
        self.out.values[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            if not node.style and node.tag in _CORE_TAGS and self.as_text(path):
                return node.value  # a plain scalar, exactly as written
            return self._scalar(node)
        if id(node) in self.active:
            self.error(node, "recursive alias: a value cannot contain itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self._check_tag(node, "tag:yaml.org,2002:seq")
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            self._check_tag(node, "tag:yaml.org,2002:map")
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):  # dates stay the text the user wrote
            return node.value
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return self.loader.construct_yaml_bool(node)
            if tag == _INT:
                return self.loader.construct_yaml_int(node)
            if tag == _FLOAT:
                value = self.loader.construct_yaml_float(node)
                if not math.isfinite(value):
                    self.error(node, "expected a finite number")
                    return None
                return value
        except (yaml.YAMLError, ValueError) as exc:
            self.error(node, f"cannot read this value: {exc}")
            return None
        self.error(node, f"unsupported YAML tag {tag!r}")
        return None

    def _check_tag(self, node: yaml.Node, expected: str) -> None:
        if node.tag != expected:
            self.error(node, f"unsupported YAML tag {node.tag!r}")

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        own = {id(key) for key, _ in node.value}
        try:
            self.loader.flatten_mapping(node)  # resolves "<<" merge keys (merged pairs first)
        except yaml.YAMLError as exc:
            self.error(node, f"cannot merge: {_problem(exc)}")
            return {}
        own_keys = {
            str(k.value) for k, _ in node.value if id(k) in own and isinstance(k, yaml.ScalarNode)
        }
        result: dict[str, Any] = {}
        first_seen: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(key_node, "a mapping key must be a plain string, not a list or mapping")
                continue
            key = str(key_node.value)
            if id(key_node) not in own:  # merged in: the mapping's own keys override it
                if key in own_keys or key in result:
                    continue
            elif key in first_seen:
                line, column = first_seen[key]
                self.error(
                    key_node,
                    f"duplicate key {key!r} (first defined at line {line}, column {column})",
                )
                continue
            else:
                first_seen[key] = _mark(key_node)
            self.out.keys[(*path, key)] = _mark(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return "; ".join(parts) or "invalid YAML"
    return str(exc).splitlines()[0] if str(exc) else "invalid YAML"


def _yaml_error(file: str, exc: yaml.YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Diagnostic(
        file=file, line=line, column=column, message=one_line(f"invalid YAML: {_problem(exc)}")
    )


def _documents(loader: yaml.SafeLoader) -> Iterator[yaml.Node]:
    while loader.check_node():
        node = loader.get_node()
        if node is not None:
            yield node


def load_yaml(text: str, file: str, *, as_text: AsText = _never) -> Located:
    """Parse one YAML document into ``Located`` data. Raises ``ManifestError`` when invalid.

    A plain (unquoted) scalar at a path where ``as_text`` is true is the text as written."""
    out = Located(data=None, file=file)
    loader = _Loader(text)
    try:
        nodes = list(_documents(loader))
    except yaml.YAMLError as exc:
        raise ManifestError([_yaml_error(file, exc)]) from None
    except (ValueError, RecursionError) as exc:  # libyaml on odd input, deep nesting
        raise ManifestError(
            [Diagnostic(file=file, line=1, column=1, message=one_line(f"invalid YAML: {exc}"))]
        ) from None
    finally:
        loader.dispose()
    if len(nodes) != 1:
        where = _mark(nodes[1]) if len(nodes) > 1 else (1, 1)
        message = (
            "the file is empty" if not nodes else f"expected one YAML document, found {len(nodes)}"
        )
        raise ManifestError(
            [Diagnostic(file=file, line=where[0], column=where[1], message=message)]
        )
    builder = _Builder(_Loader(""), out, as_text)
    try:
        out.data = builder.build(nodes[0], ())
    except _TooBig as big:
        line, column = _mark(big.node)
        raise ManifestError(
            [
                Diagnostic(
                    file=file,
                    line=line,
                    column=column,
                    message=f"the document expands to more than {MAX_VALUES} values "
                    "(aliases used as a YAML bomb?)",
                )
            ]
        ) from None
    except RecursionError:
        raise ManifestError(
            [Diagnostic(file=file, line=1, column=1, message="the document is nested too deeply")]
        ) from None
    if builder.errors:
        raise ManifestError(builder.errors)
    return out
