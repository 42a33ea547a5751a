"""The gallery's data file, ``OUT/.flux-pipeline/gallery/data.js`` (docs/reports.md).

``window.FLUX_GALLERY = {...};``: one compact JSON object the page's script (``app.js``)
reads; ``decode_tasks`` reads it back the same way (tests, the next report). Tasks are
arrays, not objects, and repeated strings are stored once: steps, states, matrix values and
prompt words are indexes into tables, a request (without its prompt) is an index into
``reqs``. One task (``TASK_FIELDS`` names the positions)::

    [readable id (an int: only its "#repeat", when the id is the one its step, cell and
     parent make), key, step #, state #, [axis #, value #, ...], [prompt word #, ...],
     parent # (-1: none), request #,
     [[path, thumbnail (the image's SHA-256) or null, width, height, on disk 1/0], ...],
     failCode (``states.failure_code`` for a failed task), failMsg, taskId,
     [first submitted, submitted, finished, downloaded (1/100 s after ``t0``, or null),
      costTime ms, attempts], new 1/0]

A key or SHA-256 is 43 characters of unpadded base64url (``~`` then the text, for one that
is not 64 hex digits). Written with ``json.dumps``; ``</``, U+2028 and U+2029 are escaped as
well, so no string can end the script or break its line, whatever the manifest or the API
put in it.

"New" marks the tasks whose key the previous gallery of OUT did not have; a rewrite that
adds no task (``flux-pipeline report``, a review) keeps the marks it had.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flux_pipeline.report.entry import Cell, TaskEntry
from flux_pipeline.report.gallery_images import (
    GalleryImages,
    Size,
    pack_hash,
    previous_sizes,
    unpack_hash,
)
from flux_pipeline.states import TaskState

FORMAT = 2
DECISIONS = ("picked", "rejected")
TASK_FIELDS = (
    "id",
    "key",
    "step",
    "state",
    "cell",
    "prompt",
    "parent",
    "request",
    "outputs",
    "failCode",
    "failMsg",
    "taskId",
    "timings",
    "new",
)
PREFIX = "window.FLUX_GALLERY = "


def _without_prompt(request: object) -> object:
    if not isinstance(request, dict) or not isinstance(request.get("input"), dict):
        return request
    fields = {k: v for k, v in request["input"].items() if k != "prompt"}
    return {**request, "input": fields}


class _Table:
    """JSON values stored once, referred to by index."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self._index: dict[str, int] = {}

    def add(self, value: object) -> int:
        token = json.dumps(value, sort_keys=True)
        found = self._index.get(token)
        if found is None:
            found = self._index[token] = len(self.items)
            self.items.append(value)
        return found


def _own_id(step: str, cell: Cell, repeat: str) -> str:
    axes = ",".join(f"{axis}={label}" for axis, label in cell)
    return f"{step}@{axes}#{repeat}" if cell else f"{step}#{repeat}"


def _packed_id(entry: TaskEntry) -> str | int:
    """``entry``'s readable id, or its repeat alone when the page can rebuild the id."""
    repeat = entry.readable_id.rpartition("#")[2]
    if repeat.isdigit() and repeat == str(int(repeat)):
        own = _own_id(entry.step, entry.cell, repeat)
        rebuilt = f"{entry.parent}/{own}" if entry.parent else own
        if rebuilt == entry.readable_id:
            return int(repeat)
    return entry.readable_id


def _moments(entry: TaskEntry) -> tuple[float | None, ...]:
    times = entry.timestamps
    return (times.first_submitted, times.submitted, times.finished, times.downloaded)


def _new_keys(keys: set[str], before: Mapping[str, int] | None) -> set[str]:
    if before is None:
        return set()
    if set(before) == keys:  # no task added: the marks stay as they were
        return {key for key, new in before.items() if new}
    return keys - set(before)


def previous_marks(previous: Mapping[str, Any] | None) -> dict[str, int] | None:
    """The "new" mark of every task of gallery data ``previous``, by key (None: no previous
    gallery); ``ValueError`` for a row that is not one of gallery data."""
    if previous is None:
        return None
    fields = list(previous["fields"])
    key, new = fields.index("key"), fields.index("new")
    marks: dict[str, int] = {}
    for row in previous["t"]:
        if len(row) != len(fields) or not isinstance(row[new], int):
            raise ValueError("not a row of gallery data")
        marks[unpack_hash(row[key])] = row[new]
    return marks


def gallery_data(
    *,
    name: str,
    manifest: str,
    entries: Sequence[TaskEntry],
    step_order: Sequence[str],
    out_dir: Path,
    decisions: Mapping[str, str] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, object]:
    """The data of the gallery of ``entries`` (thumbnails made for images that lack one).
    ``decisions``: task key -> ``picked``/``rejected`` from the review file (others are left
    out); ``previous``: the data of the gallery this one replaces (``read_data_js``)."""
    head, rows = gallery_parts(
        name=name,
        manifest=manifest,
        entries=entries,
        step_order=step_order,
        out_dir=out_dir,
        decisions=decisions,
        marks=previous_marks(previous),
        sizes=previous_sizes(previous),
    )
    return head | {"t": list(rows)}


def gallery_parts(
    *,
    name: str,
    manifest: str,
    entries: Sequence[TaskEntry],
    step_order: Sequence[str],
    out_dir: Path,
    decisions: Mapping[str, str] | None = None,
    marks: Mapping[str, int] | None = None,
    sizes: Mapping[str, Size] | None = None,
) -> tuple[dict[str, object], Iterator[list[object]]]:
    """``gallery_data`` in two parts: every field but the tasks (``t``, the last one), and
    the tasks, made one at a time as they are taken (``data_js_pieces`` writes them so: a
    100,000-task gallery never holds its rows, nor their text, at once). ``marks``: the
    previous gallery's (``previous_marks``); ``sizes``: its images' sizes
    (``gallery_images.previous_sizes``)."""
    rank = {step: i for i, step in enumerate(step_order)}
    ordered = sorted(entries, key=lambda e: (rank.get(e.step, len(rank)), e.step))
    steps = list(step_order) + sorted({e.step for e in entries} - set(step_order))
    step_index = {step: i for i, step in enumerate(steps)}
    states = [state.value for state in TaskState]
    axes: dict[str, dict[str, int]] = {}
    for entry in ordered:
        for axis, label in entry.cell:
            axes.setdefault(axis, {}).setdefault(label, len(axes[axis]))
    axis_index = {axis: i for i, axis in enumerate(axes)}
    position = {e.readable_id: i for i, e in enumerate(ordered)}
    counted = Counter(word for e in ordered for word in e.prompt.split(" ") if e.prompt)
    words = [word for word, _ in counted.most_common()]
    word_index = {word: i for i, word in enumerate(words)}
    stamps = [m for e in ordered for m in _moments(e) if m is not None]
    t0 = int(min(stamps)) if stamps else 0
    keys = {e.key for e in entries}
    new = _new_keys(keys, marks)
    requests = _Table()
    request_of = [requests.add(_without_prompt(entry.request)) for entry in ordered]
    images = GalleryImages(out_dir, sizes)

    def rows() -> Iterator[list[object]]:
        for entry, request in zip(ordered, request_of, strict=True):
            cell: list[int] = []
            for axis, label in entry.cell:
                cell += [axis_index[axis], axes[axis][label]]
            yield [
                _packed_id(entry),
                pack_hash(entry.key),
                step_index[entry.step],
                states.index(entry.state.value),
                cell,
                [word_index[w] for w in entry.prompt.split(" ")] if entry.prompt else [],
                position.get(entry.parent, -1) if entry.parent else -1,
                request,
                images.shown(entry),
                entry.failure_code if entry.state.failed else entry.fail_code,
                entry.fail_msg,
                entry.task_id,
                [None if m is None else round((m - t0) * 100) for m in _moments(entry)]
                + [entry.cost_time, entry.attempts],
                int(entry.key in new),
            ]

    head: dict[str, object] = {
        "format": FORMAT,
        "name": name,
        "manifest": manifest,
        "steps": steps,
        "states": states,
        "stateText": [state.text for state in TaskState],
        "axes": [[axis, list(values)] for axis, values in axes.items()],
        "words": words,
        "reqs": requests.items,
        "t0": t0,
        "fields": list(TASK_FIELDS),
        "previous": marks is not None,
        "decisions": {
            key: value
            for key, value in sorted((decisions or {}).items())
            if key in keys and value in DECISIONS
        },
    }
    return head, rows()


def decode_tasks(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tasks of gallery ``data`` as app.js reads them: a dict each, named by ``fields``;
    ids, keys and prompts whole, step, state and parent by name, ``cell`` the task's own
    (axis -> value), outputs as dicts, timings in seconds since the epoch."""
    fields: list[str] = data["fields"]
    rows = [dict(zip(fields, row, strict=True)) for row in data["t"]]
    for row in rows:
        row["key"] = unpack_hash(row["key"])
        row["step"] = data["steps"][row["step"]]
        row["state"] = data["states"][row["state"]]
        pairs = row["cell"]
        row["cell"] = {
            data["axes"][a][0]: data["axes"][a][1][v]
            for a, v in zip(pairs[::2], pairs[1::2], strict=True)
        }
        row["prompt"] = " ".join(data["words"][w] for w in row["prompt"])
        row["request"] = data["reqs"][row["request"]]
        row["outputs"] = [
            {
                "path": o[0],
                "thumb": None if o[1] is None else unpack_hash(o[1]),
                "width": o[2],
                "height": o[3],
                "on_disk": o[4],
            }
            for o in row["outputs"]
        ]
        *moments, cost, attempts = row["timings"]
        row["timings"] = [None if m is None else data["t0"] + m / 100 for m in moments]
        row["timings"] += [cost, attempts]

    def full_id(row: dict[str, Any]) -> str:  # a chained id is its parent's, then its own
        if isinstance(row["id"], int):
            parent = full_id(rows[row["parent"]]) if row["parent"] >= 0 else None
            own = _own_id(row["step"], tuple(row["cell"].items()), str(row["id"]))
            row["id"] = f"{parent}/{own}" if parent else own
        return str(row["id"])

    for row in rows:
        full_id(row)
    for row in rows:
        row["parent"] = rows[row["parent"]]["id"] if row["parent"] >= 0 else None
    return rows


def _json(value: object) -> str:
    """Compact JSON that no string can break out of (nor break a line of the script)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def data_js(data: Mapping[str, object]) -> str:
    """``data`` as the script ``data.js``: JSON that no string can break out of."""
    return f"{PREFIX}{_json(data)};\n"


ROWS_PER_PIECE = 1000


def data_js_pieces(head: Mapping[str, object], rows: Iterable[object]) -> Iterator[str]:
    """``data_js(head | {"t": list(rows)})``, in pieces of ``ROWS_PER_PIECE`` tasks, each
    row encoded as it is taken (a piece breaks between two rows: never inside an escape)."""
    yield f'{PREFIX}{_json(head)[:-1]},"t":['
    batch: list[str] = []
    first = True
    for row in rows:
        batch.append(_json(row))
        if len(batch) >= ROWS_PER_PIECE:
            yield ("" if first else ",") + ",".join(batch)
            batch, first = [], False
    if batch:
        yield ("" if first else ",") + ",".join(batch)
    yield "]};\n"


def read_data_js(text: str) -> dict[str, Any]:
    """What ``data_js`` wrote, read back; ``ValueError`` for anything else."""
    body = text.strip()
    if not body.startswith(PREFIX) or not body.endswith(";"):
        raise ValueError("not a flux-pipeline gallery data file")
    data = json.loads(body[len(PREFIX) : -1])
    if not isinstance(data, dict):
        raise ValueError("not a flux-pipeline gallery data file")
    return data


def previous_gallery(path: Path) -> tuple[dict[str, int] | None, dict[str, Size]]:
    """Of the gallery data at ``path`` about to be replaced, all a rewrite needs: the "new"
    mark of every task (``previous_marks``) and its images' sizes (``previous_sizes``). None
    and no sizes when there is none, or none this version reads (then no task is marked new);
    every task's key and mark readable, or none of it is used."""
    try:
        data = read_data_js(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None, {}
        marks = previous_marks(data)
    except (OSError, UnicodeDecodeError, ValueError, LookupError, TypeError, binascii.Error):
        return None, {}
    return marks, previous_sizes(data)
