"""Manifest v1 (docs/manifest.md): the pydantic models a manifest is validated against.

``load_manifest`` (``flux_pipeline/manifest/load.py``) validates a parsed manifest against
``Manifest``; ``diagnostics`` phrases pydantic's errors for a person. The same models generate
the JSON Schema (``flux_pipeline/manifest/schema.py``). They check structure only;
cross-references, files and templates are checked while expanding
(``flux_pipeline/plan/expand.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StringConstraints,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from flux_pipeline.manifest.apivalues import API_VALUES, values_of
from flux_pipeline.manifest.storage_section import Storage as Storage

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
NAME_HINT = "lowercase letters, digits, '-' and '_', starting with a letter or digit"
MAX_REPEAT = 10_000

Name = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, max_length=100), Field(description=NAME_HINT)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _one_of(name: str) -> BeforeValidator:
    """Accepts only the API values table's values for ``name`` (``manifest/apivalues.py``),
    with the error (and message) of a ``Literal``."""
    values = values_of(name)
    quoted = [repr(v) for v in values]
    expected = f"{', '.join(quoted[:-1])} or {quoted[-1]}" if len(quoted) > 1 else quoted[0]

    def check(value: Any) -> Any:
        if isinstance(value, str) and value in values:
            return value
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )

    return BeforeValidator(check)


def _enum(name: str) -> Any:
    """The schema's ``enum``: the table's values for ``name``."""
    return Field(json_schema_extra={"enum": list(values_of(name))})


Mode = Annotated[str, _one_of("mode"), _enum("mode")]
OutputFormat = Annotated[str, _one_of("output_format"), _enum("output_format")]
Provider = Annotated[str, _one_of("provider"), _enum("provider")]
_SAFETY = API_VALUES["safetyTolerance"]


class InputFields(BaseModel):
    """Create-task ``input`` fields. Unknown fields pass through to the API untouched."""

    model_config = ConfigDict(extra="allow", frozen=True)

    mode: Mode | None = Field(
        default=None, description="pro: higher quality, slower; max: balanced"
    )
    aspect_ratio: str | None = Field(
        default=None,
        description="width:height; another value than the examples is a warning "
        "(the API may accept more than it documents)",
        examples=list(values_of("aspect_ratio")),
    )
    output_format: OutputFormat | None = Field(
        default=None, description="image format of the results (the API's default is jpeg)"
    )
    safetyTolerance: Any = Field(  # the API's spelling (docs/api-contract.md)
        default=None,
        description=f"content moderation, {_SAFETY.minimum} (strictest) to {_SAFETY.maximum}; "
        "passed through untouched, another value is a warning",
        examples=[2],
    )


class Defaults(_Model):
    """Create-task fields applied to every step."""

    provider: Provider = "auto"
    input: InputFields = Field(default_factory=lambda: InputFields())


class ImageEntry(_Model):
    """One reference image: a remote ``url`` or a local ``path`` (relative to the manifest).

    Any other field (``sku``, ``colour``, ...) is kept and seen by templates beside ``name``,
    ``url`` and ``path``.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

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
# drop them (diagnostics._data_path).
T_ENTRIES, T_FILES = "<image entries>", "<image files>"
T_LIST, T_IMAGE_SET, T_LINES, T_CSV = "<list>", "<image_set>", "<lines>", "<csv>"
T_FROM_ID, T_FROM_STEP = "<step id>", "<from mapping>"
TAGS = frozenset({T_ENTRIES, T_FILES, T_LIST, T_IMAGE_SET, T_LINES, T_CSV, T_FROM_ID, T_FROM_STEP})


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


URL_TEMPLATE_OF_COLUMNS = (
    "where the local files of image values are published (context `path`, `name`, `file`, "
    "`vars`); without it a file is sent inline as a data: URI"
)
ENCODING = "the file's text encoding, e.g. cp1252 (default: from its BOM, else UTF-8)"
OneChar = Annotated[str, StringConstraints(min_length=1, max_length=1)]


class LinesAxis(_Model):
    lines: str = Field(description="a text file, one value a line (blank lines skipped)")
    images: bool = Field(
        default=False,
        description="each line is an image: a local path (relative to the manifest) or an "
        "http(s) URL; the value is then {name, url, path}",
    )
    url_template: str | None = Field(default=None, description=URL_TEMPLATE_OF_COLUMNS)
    encoding: str | None = Field(default=None, min_length=1, description=ENCODING)


class CsvAxis(_Model):
    csv: str = Field(description="a CSV file with a header row; one value (a mapping) a row")
    images: list[str] = Field(
        default_factory=list,
        description="columns whose values are images: a local path (relative to the "
        "manifest) or an http(s) URL; such a column's value is then {name, url, path}",
    )
    url_template: str | None = Field(default=None, description=URL_TEMPLATE_OF_COLUMNS)
    delimiter: OneChar | None = Field(
        default=None,
        description="the field separator, one character (default: detected among comma, "
        "semicolon, tab and |)",
    )
    quotechar: OneChar | None = Field(
        default=None, description="the quote character (default: detected, else '\"')"
    )
    encoding: str | None = Field(default=None, min_length=1, description=ENCODING)


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


class FromStep(_Model):
    """``from: {step: ID, only: picked}``: a chained step gated by the review file's decisions
    on its parents (docs/manifest.md#from-only)."""

    step: Name = Field(description="the parent step")
    only: Literal["picked", "not-rejected"] | None = Field(
        default=None,
        description="picked: chain only parents picked in the review file; not-rejected: every "
        "parent but those rejected; parents left out are held for review",
    )


def _from_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return T_FROM_ID
    if isinstance(value, dict):
        return T_FROM_STEP
    return None


From = Annotated[
    Annotated[Name, Tag(T_FROM_ID)] | Annotated[FromStep, Tag(T_FROM_STEP)],
    Discriminator(
        _from_tag,
        custom_error_type="from_type",
        custom_error_message="expected a step id or {step: ID, only: picked|not-rejected}",
    ),
]


class Step(_Model):
    id: Name
    from_: From | None = Field(
        default=None,
        alias="from",
        description="chained edit: one task per output image of that step (a step id, or "
        "{step: ID, only: picked|not-rejected} to chain only parents the review file admits)",
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

    @property
    def parent(self) -> str | None:
        """The step this one chains from (``from``), or None."""
        return self.from_.step if isinstance(self.from_, FromStep) else self.from_

    @property
    def only(self) -> str | None:
        """``from.only``: which review decisions of a parent admit its chained tasks."""
        return self.from_.only if isinstance(self.from_, FromStep) else None


class Pricing(_Model):
    """What a task costs, by mode (docs/manifest.md#pricing): ``plan`` and ``run`` show the cost
    of the tasks they would create and ``run --max-cost`` caps it."""

    currency: Annotated[str, StringConstraints(min_length=1, max_length=20)] = Field(
        default="credits", description="the unit of the prices: credits, USD, EUR, ..."
    )
    per_task: dict[Literal["pro", "max"], Annotated[float, Field(ge=0, allow_inf_nan=False)]] = (
        Field(description="mode -> price of one task (a task without a mode is pro)")
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
    pricing: Pricing | None = Field(
        default=None, description="optional: the price of a task by mode, for cost estimates"
    )
    storage: Storage | None = Field(
        default=None, description="optional: an S3-compatible bucket (docs/storage.md)"
    )
