"""Pydantic's validation errors -> located diagnostics phrased for a person.

Every error is mapped back to the YAML node it is about (``Located``) and says the key path,
what was expected and what was found; an unknown key gets a "did you mean" hint and the list
of keys the model there accepts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Tag
from pydantic_core import ErrorDetails

from flux_pipeline.errors import Diagnostic, did_you_mean
from flux_pipeline.manifest.models import NAME_HINT, TAGS, Axis, Manifest, Matrix
from flux_pipeline.manifest.yamlload import Located, Path_


def dotted(path: Path_) -> str:
    """``("steps", 0, "matrix", "style")`` -> ``steps[0].matrix.style``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the manifest"


def describe(value: Any) -> str:
    if value is None:
        return "found nothing (null)"
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
    ]
    for kind, text in kinds:
        if isinstance(value, kind):
            if isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) < 60
            ):
                return f"found {text} ({value!r})"
            return f"found {text}"
    return f"found {type(value).__name__}"


def _data_path(loc: Sequence[str | int]) -> Path_:
    return tuple(part for part in loc if part not in TAGS)


def diagnostic(located: Located, error: ErrorDetails) -> Diagnostic:
    loc = tuple(error["loc"])
    path = _data_path(loc)
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    where = dotted(path)
    if kind == "missing":
        return located.diag(path[:-1], f"{dotted(path[:-1])}: missing required key {path[-1]!r}")
    if kind == "extra_forbidden":
        key = str(path[-1])
        allowed = _allowed_keys(loc[:-1])
        message = f"{dotted(path[:-1])}: unknown key {key!r}"
        message += did_you_mean(key, allowed)
        if allowed:
            message += f"; expected one of: {', '.join(allowed)}"
        return located.diag(path, message, key=True)
    found = describe(value)
    expected: str
    if kind == "literal_error":
        expected = f"one of {ctx.get('expected', '?')}"
    elif kind == "string_pattern_mismatch":
        expected = f"a name of {NAME_HINT}"
    elif kind in {"string_type", "str_type"}:
        expected = "a string"
    elif kind in {"int_type", "int_parsing", "int_from_float"}:
        expected = "an integer"
    elif kind in {"list_type"}:
        expected = "a list"
    elif kind in {"dict_type", "model_type", "model_attributes_type"}:
        expected = "a mapping"
    elif kind in {"greater_than_equal", "less_than_equal"}:
        bound = ctx.get("ge", ctx.get("le"))
        expected = f"a number {'>=' if kind == 'greater_than_equal' else '<='} {bound}"
    elif kind == "too_short":
        expected = f"at least {ctx.get('min_length', 1)} item(s)"
        found = f"found {ctx.get('actual_length', 0)}"
    elif kind == "string_too_short":
        expected = "a non-empty string"
    elif kind == "string_too_long":
        expected = f"at most {ctx.get('max_length')} characters"
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        return located.diag(path, f"{where}: {message}")
    else:
        expected = str(error["msg"]).removeprefix("expected ")
    return located.diag(path, f"{where}: expected {expected}, {found}")


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the model at ``loc`` (pydantic's loc, with union tags) accepts."""
    model = _model_at(loc)
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    tp: Any = Manifest
    for part in loc:
        tp = _unwrap(tp)
        if _is_tagged_union(tp):
            tp = _tag_member(tp, part)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            if part in fields:
                tp = fields[part].annotation
            elif tp is Matrix:
                tp = Axis
            else:
                return None
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` (unless it carries a tagged union) and ``| None``."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated and not _is_tagged_union(tp):
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_tagged_union(tp: Any) -> bool:
    if typing.get_origin(tp) is not Annotated:
        return False
    return any(isinstance(meta, Discriminator) for meta in typing.get_args(tp)[1:])


def _tag_member(tp: Any, tag: str | int) -> Any:
    union = typing.get_args(tp)[0]
    for member in typing.get_args(union):
        if any(isinstance(m, Tag) and m.tag == tag for m in typing.get_args(member)[1:]):
            return typing.get_args(member)[0]
    return None
