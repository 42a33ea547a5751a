"""Manifest v1 (docs/manifest.md): YAML -> validated pydantic models, with located errors.

``load_manifest(path)`` reads the file, parses it with ``yamlload`` (which records where every
value sits), validates it against the models below and returns a ``LoadedManifest``. Every
pydantic error is mapped back to the YAML node it is about and phrased for a person: the key
path, what was expected, what was found, and for unknown keys a "did you mean" hint. All errors
are reported together in one ``ManifestError``.

The same models generate the JSON Schema (``flux_pipeline/manifest/schema.py``). They check
structure only; cross-references, files and templates are checked while expanding
(``flux_pipeline/plan/expand.py``).
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from flux_pipeline.errors import Diagnostic, ManifestError, did_you_mean
from flux_pipeline.manifest.yamlload import Located, Path_, load_yaml

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
NAME_HINT = "lowercase letters, digits, '-' and '_', starting with a letter or digit"
MAX_REPEAT = 10_000

Name = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, max_length=100), Field(description=NAME_HINT)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputFields(BaseModel):
    """Create-task ``input`` fields. Unknown fields pass through to the API untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    mode: Literal["pro", "max"] | None = Field(
        default=None, description="pro: higher quality, slower; max: balanced"
    )
    aspect_ratio: str | None = Field(default=None, description='e.g. "1:1", "16:9"')
    output_format: Literal["jpeg", "png", "webp"] | None = Field(
        default=None, description="image format of the results (the API's default is jpeg)"
    )


class Defaults(_Model):
    """Create-task fields applied to every step."""

    provider: Literal["auto", "value", "official"] = "auto"
    input: InputFields = Field(default_factory=lambda: InputFields())


class ImageEntry(_Model):
    """One reference image: a remote ``url`` or a local ``path`` (relative to the manifest)."""

    name: str | None = Field(default=None, min_length=1, description="defaults to the file's stem")
    url: str | None = Field(default=None, min_length=1, description="an http(s) URL")
    path: str | None = Field(
        default=None, min_length=1, description="a JPG/PNG/WebP file, <= 10 MB"
    )

    @model_validator(mode="after")
    def _url_xor_path(self) -> ImageEntry:
        if (self.url is None) == (self.path is None):
            raise ValueError("expected exactly one of `url` or `path`")
        return self


class ImageFiles(_Model):
    """Local files matching glob(s) relative to the manifest, sorted by path."""

    files: str | list[str] = Field(description='a glob such as "refs/*.png", or a list of them')
    url_template: str | None = Field(
        default=None,
        description="where the files are published, e.g. "
        '"https://raw.githubusercontent.com/o/r/main/pipelines/{{ path }}"; without it a '
        "file is sent inline as a data: URI",
    )


# Union members are tagged with names no YAML key will ever have, so error locations can
# drop them (see _data_path).
T_ENTRIES, T_FILES = "<image entries>", "<image files>"
T_LIST, T_IMAGE_SET, T_LINES, T_CSV = "<list>", "<image_set>", "<lines>", "<csv>"
TAGS = frozenset({T_ENTRIES, T_FILES, T_LIST, T_IMAGE_SET, T_LINES, T_CSV})


def _image_set_tag(value: Any) -> str | None:
    if isinstance(value, list):
        return T_ENTRIES
    if isinstance(value, dict):
        return T_FILES
    return None


ImageSet = Annotated[
    Annotated[list[ImageEntry], Tag(T_ENTRIES)] | Annotated[ImageFiles, Tag(T_FILES)],
    Discriminator(
        _image_set_tag,
        custom_error_type="image_set_type",
        custom_error_message="expected a list of images ({name, url} or {name, path}) "
        "or a mapping with `files` (and optionally `url_template`)",
    ),
]


class ImageSetAxis(_Model):
    image_set: str = Field(description="name of an entry of `image_sets`")


class LinesAxis(_Model):
    lines: str = Field(description="a UTF-8 text file, one value a line (blank lines skipped)")


class CsvAxis(_Model):
    csv: str = Field(description="a CSV file with a header row; one value (a mapping) a row")


def _axis_tag(value: Any) -> str | None:
    if isinstance(value, list):
        return T_LIST
    if isinstance(value, dict):
        for key, tag in (("image_set", T_IMAGE_SET), ("lines", T_LINES), ("csv", T_CSV)):
            if key in value:
                return tag
    return None


AXIS_FORMS = "a list of values, {image_set: NAME}, {lines: FILE} or {csv: FILE}"

Axis = Annotated[
    Annotated[list[Any], Tag(T_LIST)]
    | Annotated[ImageSetAxis, Tag(T_IMAGE_SET)]
    | Annotated[LinesAxis, Tag(T_LINES)]
    | Annotated[CsvAxis, Tag(T_CSV)],
    Discriminator(
        _axis_tag, custom_error_type="axis_type", custom_error_message=f"expected {AXIS_FORMS}"
    ),
]


class Matrix(BaseModel):
    """Axes by name (any key but ``include``/``exclude``), GitHub Actions semantics."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Axis] = Field(init=False)

    include: list[dict[str, Any]] = Field(
        default_factory=list, description="extend matching combinations or add new ones"
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list, description="drop combinations matching these (partially)"
    )

    @property
    def axes(self) -> dict[str, Axis]:
        return dict(self.__pydantic_extra__ or {})


class Step(_Model):
    id: Name
    from_: Name | None = Field(
        default=None,
        alias="from",
        description="chained edit: one task per output image of that step",
    )
    matrix: Matrix | None = None
    repeat: Annotated[StrictInt, Field(ge=1, le=MAX_REPEAT)] = Field(
        default=1, description="independent generations per matrix cell"
    )
    prompt: str = Field(description="Jinja2 template of input.prompt")
    images: list[str] | None = Field(
        default=None,
        description="templates of input.image_urls; chained steps default to "
        '["{{ parent.image_url }}"]',
    )
    input: InputFields = Field(
        default_factory=lambda: InputFields(), description="overrides defaults.input for this step"
    )
    output: str | None = Field(
        default=None,
        description="output path template, relative to the output directory, no extension",
    )


class Manifest(_Model):
    """A flux-pipeline manifest, version 1."""

    model_config = ConfigDict(
        title="flux-pipeline manifest v1",
        json_schema_extra={"$id": "https://flux-pipeline.dev/manifest.schema.json"},
    )

    version: Literal[1]
    name: Name
    description: str | None = None
    defaults: Defaults = Field(default_factory=lambda: Defaults())
    vars: dict[str, Any] = Field(default_factory=dict, description="constants, as {{ vars.NAME }}")
    image_sets: dict[str, ImageSet] = Field(
        default_factory=dict, description="named lists of reference images"
    )
    steps: list[Step] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    """A valid manifest model, the source it came from and where its values are."""

    model: Manifest
    path: Path
    sha256: str
    located: Located

    @property
    def file(self) -> str:
        return self.located.file


def read_manifest_text(path: Path, file: str) -> tuple[str, str]:
    """The manifest's text and the sha256 of its bytes; unreadable or non-UTF-8 -> error."""
    try:
        content = path.read_bytes()
    except IsADirectoryError:
        message = "cannot read the manifest: it is a directory"
        raise ManifestError([Diagnostic(file=file, line=0, column=0, message=message)]) from None
    except OSError as exc:
        message = f"cannot read the manifest: {exc.strerror or exc}"
        raise ManifestError([Diagnostic(file=file, line=0, column=0, message=message)]) from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = content[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        message = f"the manifest is not valid UTF-8 (byte 0x{content[exc.start]:02x})"
        raise ManifestError(
            [Diagnostic(file=file, line=line, column=column, message=message)]
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        message = "the manifest contains a NUL character"
        raise ManifestError([Diagnostic(file=file, line=line, column=1, message=message)])
    return text, hashlib.sha256(content).hexdigest()


def load_manifest(path: Path, *, file: str | None = None) -> LoadedManifest:
    """Read and validate ``path``. Raises ``ManifestError`` with every located problem."""
    file = file if file is not None else str(path)
    text, sha256 = read_manifest_text(path, file)
    located = load_yaml(text, file)
    if not isinstance(located.data, dict):
        found = _describe(located.data)
        raise ManifestError(
            [located.diag((), f"expected a mapping with `version`, `name` and `steps`, {found}")]
        )
    try:
        model = Manifest.model_validate(located.data)
    except ValidationError as exc:
        errors = [_diagnostic(located, error) for error in exc.errors()]
        raise ManifestError(_dedupe(errors)) from None
    return LoadedManifest(model=model, path=path, sha256=sha256, located=located)


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[Diagnostic] = set()
    result: list[Diagnostic] = []
    for d in diagnostics:
        if d not in seen:
            seen.add(d)
            result.append(d)
    return sorted(result, key=lambda d: (d.line, d.column))


# --- pydantic errors -> located, readable diagnostics ------------------------------------


def dotted(path: Path_) -> str:
    """``("steps", 0, "matrix", "style")`` -> ``steps[0].matrix.style``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "the manifest"


def _describe(value: Any) -> str:
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


def _diagnostic(located: Located, error: ErrorDetails) -> Diagnostic:
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
    found = _describe(value)
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
