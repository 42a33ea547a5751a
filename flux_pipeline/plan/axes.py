"""A step's matrix -> its cells: axis sources read, include/exclude checked and applied.

Axis sources (docs/manifest.md): a list of values, ``{image_set: NAME}`` (values are images, matched
and labelled by name), ``{lines: FILE}`` (one value a non-blank line) and ``{csv: FILE}`` (one
mapping a row, matched and labelled by its first column). Files are relative to the manifest
and read by ``tables`` (encoding, CSV dialect). ``images`` makes lines / CSV columns images
(``imagesets.Resolver.value_image``): the value becomes ``{name, url, path}``, still matched
and labelled by the text written in the file.

A ``Cell`` is one combination as templates see it, plus its label for readable ids
(``@product=mug,style=watercolor``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux_pipeline.errors import did_you_mean
from flux_pipeline.layout import read_inside
from flux_pipeline.manifest.models import CsvAxis, ImageSetAxis, LinesAxis, Matrix
from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.plan import matrix, tables, templates
from flux_pipeline.plan.imagesets import Image, Resolver
from flux_pipeline.plan.tasks import canonical_json

RESERVED = frozenset({"vars", "step", "repeat_index", "parent"})
LABEL_WIDTH = 40
MAX_AXIS_FILE_BYTES = 16 * 1024 * 1024  # a `lines` or `csv` file
MAX_REPORTED = 10  # image values reported wrong, per axis

Report = Callable[[Path_, str], None]


@dataclass(frozen=True, slots=True)
class Cell:
    values: dict[str, Any]  # context entries: axis name -> value (images as mappings)
    label: str  # "" or "@axis=value,..."
    pairs: tuple[tuple[str, str], ...] = ()  # (axis, value label) in label order


@dataclass(slots=True)
class _Axis:
    name: str
    values: list[Any]
    key: Callable[[Any], Any]  # what exclude/include values are compared with
    lookup: dict[str, Any] = field(default_factory=dict)  # label -> value, for include
    ambiguous: set[str] = field(default_factory=set)  # labels truncated to the same text

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for value in self.values:
            full = canonical_json(self.key(value))
            short = format_value(self.key(value))
            if seen.setdefault(short, full) != full:
                self.ambiguous.add(short)

    def label(self, value: Any) -> str:
        """The value as shown in readable ids; truncated ones that clash get a short hash."""
        short = format_value(self.key(value))
        if short in self.ambiguous:
            digest = hashlib.sha256(canonical_json(self.key(value)).encode()).hexdigest()
            short += digest[:6]
        return short


def format_value(value: Any) -> str:
    """How a matrix value reads in a readable id."""
    if isinstance(value, str):
        text = " ".join(value.split())
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = canonical_json(value)
    if len(text) > LABEL_WIDTH:
        text = text[: LABEL_WIDTH - 1] + "…"
    return text


def _name_key(value: Any) -> Any:
    return value["name"] if isinstance(value, dict) else value


def _written(value: Any) -> Any:
    """An image value of a lines / CSV axis as written in the file (a path or a URL)."""
    return value.get("path", value["url"]) if isinstance(value, dict) else value


def _identity(value: Any) -> Any:
    return value


class CellBuilder:
    """Builds the cells of each step; reads each lines/CSV file once."""

    def __init__(
        self,
        base: Path,
        image_sets: Mapping[str, list[Image]],
        report: Report,
        *,
        max_cells: int,
        root: Path,
        resolver: Resolver,
    ) -> None:
        self.base = base
        self.root = root  # nothing outside it may be read (layout.read_inside)
        self.image_sets = image_sets
        self.report = report
        self.max_cells = max_cells
        self.resolver = resolver  # checks (and keeps, for submit time) the files images name
        self._files: dict[tuple[Any, ...], Any] = {}

    def cells(self, at: Path_, spec: Matrix | None) -> list[Cell] | None:
        """The cells of the matrix at YAML path ``at`` (``None`` matrix: one empty cell).

        Returns None when the matrix is invalid (the problems have been reported).
        """
        if spec is None:
            return [Cell(values={}, label="")]
        ok = True
        axes: list[_Axis] = []
        for name, source in spec.axes.items():
            if not self._check_name((*at, name), name, "axis"):
                ok = False
            axis = self._axis((*at, name), name, source)
            if axis is None:
                ok = False
            else:
                axes.append(axis)
        if not ok:
            return None
        by_name = {axis.name: axis for axis in axes}
        ok = self._check_exclude(at, spec, by_name) & self._check_include(at, spec, by_name)
        if not ok:
            return None
        if not spec.axes and not spec.include:
            self.report(at, "the matrix is empty: give it axes or `include` entries")
            return None
        pairs = [(axis.name, axis.values) for axis in axes]
        size = matrix.product_size(pairs) + len(spec.include)
        if size > self.max_cells:
            self.report(at, f"the matrix has {size} combinations; the limit is {self.max_cells}")
            return None
        combinations = matrix.expand(
            pairs,
            include=spec.include,
            exclude=spec.exclude,
            match=lambda axis, value: by_name[axis].key(value),
        )
        if not combinations:
            self.report(at, "the matrix has no combinations left after `exclude`")
            return None
        result: list[Cell] = []
        for combination in combinations:
            cell = self._cell(at, combination, by_name)
            if cell is None:
                return None
            result.append(cell)
        return result

    def _check_name(self, at: Path_, name: str, what: str) -> bool:
        if not (name.isidentifier() and name.isascii()):
            self.report(
                at,
                f"{what} name {name!r} cannot be used in templates: use letters, digits and "
                "'_', not starting with a digit",
            )
            return False
        if name in RESERVED:
            self.report(at, f"{what} name {name!r} is reserved (templates use it for itself)")
            return False
        return True

    def _axis(self, at: Path_, name: str, source: Any) -> _Axis | None:
        if isinstance(source, list):
            if not source:
                self.report(at, f"axis {name!r} is empty")
                return None
            return _Axis(name, list(source), _identity)
        if isinstance(source, ImageSetAxis):
            images = self.image_sets.get(source.image_set)
            if images is None:
                hint = did_you_mean(source.image_set, list(self.image_sets))
                self.report((*at, "image_set"), f"unknown image set {source.image_set!r}{hint}")
                return None
            if not images:
                return None  # reported with the image set
            values = [image.as_context() for image in images]
            return _Axis(name, values, _name_key, {v["name"]: v for v in values})
        if isinstance(source, LinesAxis):
            return self._lines_axis(at, name, source)
        assert isinstance(source, CsvAxis)
        return self._csv_axis(at, name, source)

    def _lines_axis(self, at: Path_, name: str, source: LinesAxis) -> _Axis | None:
        lines = self._read(at, "lines", source.lines, source.encoding, tables.lines_of, ())
        if lines is None:
            return None
        if not source.images:
            if source.url_template is not None:
                self._no_images(at)
                return None
            return _Axis(name, [line for _, line in lines], _identity)
        file = str(self.base / source.lines)
        values = [(f"{file}:{n}", v) for n, v in lines]
        found = self._images(at, (*at, "lines"), source.url_template, values, None)
        if found is None:
            return None
        return _Axis(name, found, _written, {_written(v): v for v in found})

    def _csv_axis(self, at: Path_, name: str, source: CsvAxis) -> _Axis | None:
        def parse(text: str, file: str) -> tables.Table | str:
            return tables.table_of(
                text, file, delimiter=source.delimiter, quotechar=source.quotechar
            )

        dialect = (source.delimiter, source.quotechar)
        table = self._read(at, "csv", source.csv, source.encoding, parse, dialect)
        if table is None:
            return None
        rows = [dict(row) for _, row in table.rows]
        first = table.header[0]
        if source.url_template is not None and not source.images:
            self._no_images(at)
            return None
        ok = True
        for j, column in enumerate(source.images):
            if column not in table.header:
                hint = did_you_mean(column, list(table.header))
                self.report((*at, "images", j), f"{source.csv} has no column {column!r}{hint}")
                ok = False
                continue
            file = str(self.base / source.csv)
            values = [(f"{file}:{n}", row[column]) for n, row in table.rows]
            found = self._images(at, (*at, "images", j), source.url_template, values, column)
            if found is None:
                ok = False
                continue
            for row, image in zip(rows, found, strict=True):
                row[column] = image
        if not ok:
            return None
        return _Axis(
            name,
            rows,
            lambda row: _written(row[first]),
            {_written(row[first]): row for row in rows},
        )

    def _no_images(self, at: Path_) -> None:
        self.report((*at, "url_template"), "url_template applies to images: add `images`")

    def _images(
        self,
        at: Path_,
        values_at: Path_,
        url_template: str | None,
        values: list[tuple[str, str]],
        column: str | None,
    ) -> list[dict[str, Any]] | None:
        """The images ``values`` (``file:line``, text) name; None when any is wrong (reported)."""
        template: templates.Compiled | None = None
        if url_template is not None:
            try:
                template = templates.compile_template(url_template)
            except templates.TemplateProblem as exc:
                self.report((*at, "url_template"), str(exc))
                return None
        found: list[dict[str, Any]] = []
        wrong = 0
        for where, text in values:
            value = text.strip()
            image = self.resolver.value_image(value, template) if value else None
            if isinstance(image, Image):
                found.append(image.as_context())
                continue
            wrong += 1
            if wrong > MAX_REPORTED:
                continue
            what = f"{where}: column {column!r}" if column is not None else where
            if image is None:
                self.report(values_at, f"{what} is empty: expected an image (a path or a URL)")
            else:
                self.report(values_at, f"{what}: {image}")
        if wrong > MAX_REPORTED:
            self.report(values_at, f"{wrong - MAX_REPORTED} more image value(s) are wrong")
        return None if wrong else found

    def _read(
        self,
        at: Path_,
        kind: str,
        relative: str,
        encoding: str | None,
        parse: Callable[[str, str], Any],
        options: tuple[Any, ...],
    ) -> Any:
        """``parse(text, file)`` of the file at ``relative`` (once per file, encoding and
        ``options``); None when it is wrong (reported at the axis's ``kind`` key)."""
        if encoding is not None:
            problem = tables.check_encoding(encoding)
            if problem is not None:
                self.report((*at, "encoding"), problem)
                return None
        path = self.base / relative
        cache_key = (kind, path, encoding, *options)
        found = self._files.get(cache_key)
        if found is None:
            content = read_inside(self.root, path, MAX_AXIS_FILE_BYTES)
            if isinstance(content, str):
                found = content
            else:
                text = tables.decode(content, str(path), encoding)
                found = text.message if isinstance(text, tables.Problem) else parse(text, str(path))
            self._files[cache_key] = found
        if isinstance(found, str):
            self.report((*at, kind), found)
            return None
        return found

    def _check_exclude(self, at: Path_, spec: Matrix, axes: Mapping[str, _Axis]) -> bool:
        ok = True
        for j, entry in enumerate(spec.exclude):
            for key, value in entry.items():
                where = (*at, "exclude", j, key)
                axis = axes.get(key)
                if axis is None:
                    hint = did_you_mean(key, list(axes))
                    self.report(where, f"exclude key {key!r} is not an axis of the matrix{hint}")
                    ok = False
                elif not any(matrix.same(axis.key(v), value) for v in axis.values):
                    shown = [axis.key(v) for v in axis.values][:10]
                    hint = did_you_mean(str(value), [str(s) for s in shown])
                    self.report(
                        where,
                        f"exclude value {value!r} is not a value of axis {key!r}{hint}; "
                        f"values: {', '.join(format_value(s) for s in shown)}",
                    )
                    ok = False
        return ok

    def _check_include(self, at: Path_, spec: Matrix, axes: Mapping[str, _Axis]) -> bool:
        ok = True
        for j, entry in enumerate(spec.include):
            for key in entry:
                if key not in axes and not self._check_name((*at, "include", j, key), key, "key"):
                    ok = False
        return ok

    def _cell(
        self, at: Path_, combination: dict[str, Any], axes: Mapping[str, _Axis]
    ) -> Cell | None:
        ordered = [name for name in axes if name in combination]
        ordered += [name for name in combination if name not in axes]
        values: dict[str, Any] = {}
        pairs: list[tuple[str, str]] = []
        for name in ordered:
            value = combination[name]
            axis = axes.get(name)
            if axis is not None and axis.lookup and not isinstance(value, dict):
                # an include entry that became a new combination names an image / CSV row
                resolved = axis.lookup.get(str(value))
                if resolved is None:
                    hint = did_you_mean(str(value), list(axis.lookup))
                    self.report((*at, "include"), f"{name}: no value named {value!r}{hint}")
                    return None
                value = resolved
            values[name] = value
            label = axis.label(value) if axis is not None else format_value(value)
            pairs.append((name, label))
        text = ",".join(f"{name}={label}" for name, label in pairs)
        return Cell(values=values, label="@" + text if pairs else "", pairs=tuple(pairs))
