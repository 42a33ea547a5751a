"""The gallery's data file, ``OUT/.flux-pipeline/gallery/data.js`` (docs/reports.md).

``window.FLUX_GALLERY = {...};``: one compact JSON object the page's script (``app.js``)
reads. Tasks are arrays, not objects, and every repeated string is stored once: steps, states
and matrix values are indexes into tables, and a task's request (without its prompt, which is
kept beside it) is an index into ``reqs`` (the tasks of one step usually share all but the
prompt). One task (``TASK_FIELDS`` names the positions)::

    [readable id, key, step #, state #, [axis #, value #, ...], prompt, parent # (-1: none),
     request #, [[path, thumbnail sha256 or null, width, height, on disk 1/0], ...],
     failCode (``states.failure_code`` for a failed task), failMsg, taskId,
     [first submitted, submitted, finished, downloaded, cost ms, attempts],
     new since the previous report 1/0]

Written with ``json.dumps``; ``</``, U+2028 and U+2029 are escaped as well, so no string can
end the script or break the line it is on, whatever the manifest or the API put in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from flux_pipeline.errors import UsageError
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.reportfile import load_report
from flux_pipeline.report.thumbs import ensure_thumb
from flux_pipeline.states import TaskState

FORMAT = 1
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


def previous_keys(report_json: Path) -> frozenset[str] | None:
    """The task keys of the report about to be replaced (None: there is none, or it cannot
    be read): the gallery marks tasks whose key is not among them as new."""
    if not report_json.is_file():
        return None
    try:
        return frozenset(entry.key for entry in load_report(report_json).tasks)
    except UsageError:
        return None


def _without_prompt(request: object) -> object:
    if not isinstance(request, dict) or not isinstance(request.get("input"), dict):
        return request
    fields = {k: v for k, v in request["input"].items() if k != "prompt"}
    return {**request, "input": fields}


class _Table:
    """Strings or JSON values stored once, referred to by index."""

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


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _outputs(entry: TaskEntry, out_dir: Path) -> list[list[object]]:
    shown: list[list[object]] = []
    done = entry.state in (TaskState.DOWNLOADED, TaskState.SUCCEEDED)
    for output in entry.outputs if done else ():
        image = out_dir / output.path
        if not image.is_file():
            shown.append([output.path, None, 0, 0, 0])
            continue
        info = ensure_thumb(out_dir, image, output.sha256)
        if info is None:
            shown.append([output.path, None, 0, 0, 1])
        else:
            sha = output.sha256 if info.thumb else None
            shown.append([output.path, sha, info.width, info.height, 1])
    return shown


def gallery_data(
    *,
    name: str,
    manifest: str,
    entries: Sequence[TaskEntry],
    step_order: Sequence[str],
    out_dir: Path,
    decisions: Mapping[str, str] | None = None,
    previous: frozenset[str] | None = None,
) -> dict[str, object]:
    """The data of the gallery of ``entries`` (thumbnails made for images that lack one).
    ``decisions``: task key -> ``picked``/``rejected`` from the review file (others are left
    out); ``previous``: the keys of the report before this one (None: no such report)."""
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
    requests = _Table()
    tasks = []
    for entry in ordered:
        stamps = entry.timestamps
        cell: list[int] = []
        for axis, label in entry.cell:
            cell += [axis_index[axis], axes[axis][label]]
        tasks.append(
            [
                entry.readable_id,
                entry.key,
                step_index[entry.step],
                states.index(entry.state.value),
                cell,
                entry.prompt,
                position.get(entry.parent, -1) if entry.parent else -1,
                requests.add(_without_prompt(entry.request)),
                _outputs(entry, out_dir),
                entry.failure_code if entry.state.failed else entry.fail_code,
                entry.fail_msg,
                entry.task_id,
                [
                    _rounded(stamps.first_submitted),
                    _rounded(stamps.submitted),
                    _rounded(stamps.finished),
                    _rounded(stamps.downloaded),
                    entry.cost_time,
                    entry.attempts,
                ],
                int(previous is not None and entry.key not in previous),
            ]
        )
    keys = {e.key for e in entries}
    return {
        "format": FORMAT,
        "name": name,
        "manifest": manifest,
        "steps": steps,
        "states": states,
        "stateText": [state.text for state in TaskState],
        "axes": [[axis, list(values)] for axis, values in axes.items()],
        "reqs": requests.items,
        "fields": list(TASK_FIELDS),
        "previous": previous is not None,
        "decisions": {
            key: value
            for key, value in sorted((decisions or {}).items())
            if key in keys and value in DECISIONS
        },
        "t": tasks,
    }


def data_js(data: Mapping[str, object]) -> str:
    """``data`` as the script ``data.js``: JSON that no string can break out of."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"{PREFIX}{text};\n"


def read_data_js(text: str) -> object:
    """What ``data_js`` wrote, read back (tests, tools)."""
    body = text.strip()
    if not body.startswith(PREFIX) or not body.endswith(";"):
        raise ValueError("not a flux-pipeline gallery data file")
    return json.loads(body[len(PREFIX) : -1])
