"""The lock file, ``<manifest>.lock.json`` next to its manifest: the lasting record of what was
paid for (docs/lockfile.md). This module is its one reader and writer.

One entry per task key ever sent to the API (a state DB row with a taskId, ambiguous, failed
or expired): readable id, step, taskId, state, outputs (path, bytes, SHA-256), result URLs and
when they expire, and the parts that explain the key (the request as ``report.json`` shows
it, the parent). Nothing secret, no absolute path, no timestamp that changes without a change
of fact. The text is deterministic: sorted keys, one field a line, so a rerun that changed
nothing leaves it byte-identical and a new task adds only its own lines.

A lock handed to a run is untrusted input (a pull request may edit it): ``load_lock`` checks
every field and raises one line (``UsageError``) naming the file and what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from flux_pipeline.errors import UsageError
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import RESULT_URL_LIFETIME
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX, map_strings
from flux_pipeline.report.lockcheck import (
    BadLock,
    Confinement,
    count,
    count_or_none,
    depth,
    expiry,
    fail,
    shown,
    text,
    text_or_none,
    urls,
)
from flux_pipeline.states import TaskRecord, TaskState

FORMAT = 2  # an output names its object in the bucket (``object``): written only then
PLAIN_FORMAT = 1  # no output names an object: written as before, readable by older versions
READS = (1, 2)  # the formats this version reads
SUFFIX = ".lock.json"

# a lock entry's state, for a person, and the DB state it stands for
LOCK_STATE = {
    TaskState.DOWNLOADED: "done",
    TaskState.SUBMITTED: "submitted",
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.EXPIRED: "expired",
    TaskState.SUBMITTING: "ambiguous",
}
DB_STATE = {text: state for state, text in LOCK_STATE.items()}
_KEY = re.compile(r"^[0-9a-f]{64}$")
_OBJECT = re.compile(r"^([A-Za-z0-9._-]+/)*outputs/sha256/[0-9a-f]{64}\.[a-z0-9]{1,8}$")


def beside_manifest(manifest: Path, suffix: str) -> Path:
    """A file next to the manifest named by its stem: ``pipelines/demo.yaml`` and
    ``.lock.json`` -> ``pipelines/demo.lock.json`` (the lock, the review file)."""
    return manifest.with_name(manifest.stem + suffix)


def lock_path_for(manifest: Path) -> Path:
    """``pipelines/demo.yaml`` -> ``pipelines/demo.lock.json``."""
    return beside_manifest(manifest, SUFFIX)


@dataclass(frozen=True, slots=True, kw_only=True)
class LockOutput:
    path: str  # relative to the output directory
    bytes: int
    sha256: str
    stored: str | None = None  # its object key in the bucket, once published (docs/storage.md)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"bytes": self.bytes, "path": self.path, "sha256": self.sha256}
        return body if self.stored is None else body | {"object": self.stored}


@dataclass(frozen=True, slots=True, kw_only=True)
class LockEntry:
    """One task key ever sent. ``urls_expire``: seconds since the epoch (finished + 15 days)."""

    key: str
    readable_id: str
    step: str
    state: TaskState  # the DB state it stands for (never planned)
    task_id: str | None = None
    fail_code: str | None = None
    attempts: int = 1
    outputs: tuple[LockOutput, ...] = ()
    result_urls: tuple[str, ...] = ()
    urls_expire: int | None = None
    request: object = None
    parent: str | None = None  # the parent's readable id
    parent_key: str | None = None
    parent_output_index: int | None = None
    base_key: str | None = None  # a regeneration's generation 0 key (plan/generations.py)
    generation: int = 0

    @property
    def finished_at(self) -> float | None:
        return None if self.urls_expire is None else float(self.urls_expire - RESULT_URL_LIFETIME)

    def to_json(self) -> dict[str, object]:
        again = {"generation": self.generation, "regenerates": self.base_key}
        return (again if self.generation else {}) | {
            "attempts": self.attempts,
            "failCode": self.fail_code,
            "id": self.readable_id,
            "outputs": [o.to_json() for o in self.outputs],
            "parent": self.parent,
            "parent_key": self.parent_key,
            "parent_output_index": self.parent_output_index,
            "request": self.request,
            "result_urls": list(self.result_urls),
            "state": LOCK_STATE[self.state],
            "step": self.step,
            "taskId": self.task_id,
            "urls_expire": _iso(self.urls_expire),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Lock:
    path: Path
    manifest: str
    entries: Mapping[str, LockEntry] = field(default_factory=dict)
    sha256: str = ""  # of the file's bytes, when read from a file (run/lock_memo.py)

    def by_id(self) -> dict[str, LockEntry]:
        """The entry of each readable id (of a regenerated task: its latest generation)."""
        ordered = sorted(self.entries.values(), key=lambda e: e.generation)
        return {entry.readable_id: entry for entry in ordered}

    def generations(self) -> list[tuple[str | None, int]]:
        """``(base key, generation)`` of every regeneration the lock records."""
        return [(e.base_key, e.generation) for e in self.entries.values() if e.generation]


# --- writing --------------------------------------------------------------------------------


def _iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_request(plan: Plan, request_json: str) -> object:
    """The request as the lock shows it: local images by path (relative to the manifest)
    and hash, a chained task's parent image as its placeholder (it is the parent's output)."""
    base = plan.manifest_path.parent

    def show(value: str) -> str:
        if not value.startswith(LOCAL_IMAGE_PREFIX):
            return value
        sha = value[len(LOCAL_IMAGE_PREFIX) :]
        image = plan.local_images.get(sha)
        where = "?"
        if image is not None:
            where = PurePosixPath(Path(os.path.relpath(image.path, base)).as_posix()).as_posix()
        return f"local:{where}#sha256={sha}"

    return map_strings(json.loads(request_json), show)


def sent(record: TaskRecord) -> bool:
    """Does the lock keep ``record``: was it (maybe) sent to the API?"""
    return record.state in LOCK_STATE and (
        record.task_id is not None or record.state is not TaskState.SUBMITTED
    )


def entry_of(
    plan: Plan,
    record: TaskRecord,
    parent_id: str | None,
    old: LockEntry | None,
    objects: Mapping[str, str] | None = None,
) -> LockEntry:
    """The lock entry of state DB row ``record`` (``old``: the lock's entry of the same key,
    whose request is kept: a key's request never changes; ``objects``: SHA-256 -> object key
    of the outputs published, else those ``old`` names are kept)."""
    known = {o.sha256: o.stored for o in old.outputs if o.stored} if old is not None else {}
    known |= objects or {}
    finished = record.finished_at
    urls = record.result_urls
    expire = int(finished) + RESULT_URL_LIFETIME if finished is not None and urls else None
    failed = record.state in (TaskState.FAILED, TaskState.EXPIRED)
    return LockEntry(
        key=record.key,
        readable_id=record.readable_id,
        step=record.step,
        state=record.state,
        task_id=record.task_id,
        fail_code=record.fail_code if failed else None,
        attempts=record.attempts,
        outputs=tuple(
            LockOutput(path=o.path, bytes=o.bytes, sha256=o.sha256, stored=known.get(o.sha256))
            for o in sorted(record.outputs, key=lambda o: o.index)
        )
        if record.state is TaskState.DOWNLOADED
        else (),
        result_urls=urls,
        urls_expire=expire,
        request=old.request if old is not None else lock_request(plan, record.request_json),
        parent=parent_id,
        parent_key=record.parent_key,
        parent_output_index=record.parent_output_index,
        base_key=record.base_key if record.generation else None,
        generation=record.generation,
    )


def lock_entries(
    plan: Plan,
    records: Mapping[str, TaskRecord],
    old: Lock | None,
    objects: Mapping[str, str] | None = None,
) -> dict[str, LockEntry]:
    """Every key ever sent: the state DB's rows that were sent, then the old lock's entries
    the DB does not have (a task no longer planned, paid for: kept)."""
    previous = old.entries if old is not None else {}
    return dict(each_lock_entry(plan, records, previous, objects))


def each_lock_entry(
    plan: Plan,
    records: Mapping[str, TaskRecord],
    previous: Mapping[str, LockEntry],
    objects: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, LockEntry]]:
    """``lock_entries``, one (key, entry) at a time and in its order, with the old lock's
    entries ``previous``: a caller that keeps only what it makes of each entry never holds
    them all (run/lock_keeper.py)."""
    made: set[str] = set()
    for key, record in records.items():
        if not sent(record):
            continue
        parent = records.get(record.parent_key) if record.parent_key else None
        parent_id = parent.readable_id if parent is not None else None
        if parent_id is None and record.parent_key and record.parent_key in previous:
            parent_id = previous[record.parent_key].readable_id
        made.add(key)
        yield key, entry_of(plan, record, parent_id, previous.get(key), objects)
    for key, entry in previous.items():
        if key not in made:
            yield key, entry


# --- reading --------------------------------------------------------------------------------


def _outputs(data: Mapping[str, object], out_dir: Confinement) -> tuple[LockOutput, ...]:
    items = data.get("outputs")
    if not isinstance(items, list):
        fail("'outputs' must be a list")
    outputs = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            fail(f"output #{number} is not an object")
        path, sha = text(item, "path"), text(item, "sha256")
        if problem := out_dir.problem(path):
            fail(f"output #{number}: {problem}")
        if not _KEY.match(sha):
            fail(f"output #{number}: 'sha256' must be 64 lowercase hex digits")
        stored = text_or_none(item, "object") if "object" in item else None
        if stored is not None and not _OBJECT.match(stored):
            fail(f"output #{number}: 'object' is not an object key of ours")
        outputs.append(LockOutput(path=path, bytes=count(item, "bytes"), sha256=sha, stored=stored))
    return tuple(outputs)


def _entry(key: str, data: object, out_dir: Confinement) -> LockEntry:
    if not _KEY.match(key):
        fail(f"task key {shown(key)} is not 64 lowercase hex digits")
    if not isinstance(data, dict):
        fail(f"task {key[:12]} is not an object")
    rid = data.get("id")
    try:
        state_text = data.get("state")
        if state_text not in DB_STATE:
            fail(f"'state' {state_text!r} is none of {', '.join(DB_STATE)}")
        state = DB_STATE[str(state_text)]
        entry = LockEntry(
            key=key,
            readable_id=text(data, "id"),
            step=text(data, "step"),
            state=state,
            task_id=text_or_none(data, "taskId"),
            fail_code=text_or_none(data, "failCode"),
            attempts=count(data, "attempts"),
            outputs=_outputs(data, out_dir),
            result_urls=urls(data),
            urls_expire=expiry(data),
            request=data.get("request"),
            parent=text_or_none(data, "parent"),
            parent_key=text_or_none(data, "parent_key"),
            parent_output_index=count_or_none(data, "parent_output_index"),
            base_key=text(data, "regenerates") if "regenerates" in data else None,
            generation=count(data, "generation") if "generation" in data else 0,
        )
        depth(entry.request)
        if (entry.base_key is None) != (entry.generation == 0):
            fail("'generation' (at least 1) and 'regenerates' come together")
        if entry.base_key is not None and not _KEY.match(entry.base_key):
            fail("'regenerates' must be 64 lowercase hex digits")
        if entry.parent_key is not None and not _KEY.match(entry.parent_key):
            fail("'parent_key' must be 64 lowercase hex digits or null")
        if state is TaskState.DOWNLOADED and not entry.outputs:
            fail("a done task must list its outputs")
        if state in (TaskState.SUBMITTED, TaskState.SUCCEEDED) and entry.task_id is None:
            fail(f"a {state_text} task must have a taskId")
        if state is TaskState.SUCCEEDED and not entry.result_urls:
            fail("a succeeded task must list its result URLs")
        if entry.result_urls and entry.urls_expire is None:
            fail("result URLs need their 'urls_expire' time")
        if len(entry.outputs) > max(1, len(entry.result_urls)):
            fail("more outputs than result URLs")
    except BadLock as exc:
        who = shown(rid) if isinstance(rid, str) else key[:12]
        raise BadLock(f"task {who}: {exc}") from None
    return entry


def parse_lock(path: Path, content: str, *, out_dir: Path | None = None) -> Lock:
    """The lock ``content`` (read from ``path``), every field checked; output paths confined to
    ``out_dir``. Raises ``UsageError``: one line naming the file and what is wrong."""
    try:
        try:
            document = json.loads(content, parse_constant=lambda name: fail(f"{name} in JSON"))
        except (ValueError, RecursionError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            fail(f"not JSON: {message}")
        if not isinstance(document, dict):
            fail("not a JSON object")
        version = document.get("format")
        if not isinstance(version, int) or isinstance(version, bool):
            fail("no 'format' version")
        if version not in READS:
            fail(f"format {version}; this version reads formats {', '.join(map(str, READS))}")
        manifest = text(document, "manifest")
        tasks = document.get("tasks")
        if not isinstance(tasks, dict):
            fail("'tasks' must be an object keyed by task key")
        confinement = Confinement(out_dir)
        # each task's parsed JSON dropped once its entry is made (in the file's order)
        entries = {key: _entry(key, tasks.pop(key), confinement) for key in list(tasks)}
    except BadLock as exc:
        raise UsageError(f"{path}: not a valid flux-pipeline lock file: {exc}") from None
    return Lock(path=path, manifest=manifest, entries=entries)


def load_lock(path: Path, *, plan: Plan, out_dir: Path | None = None) -> Lock | None:
    """The lock at ``path`` for ``plan``'s manifest, or None when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the lock file: {exc.strerror or exc}") from None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a valid flux-pipeline lock file: not UTF-8") from None
    digest = hashlib.sha256(raw).hexdigest()
    del raw  # not held beside its text while it is parsed (some 70 MB at 100,000 tasks)
    lock = dataclasses.replace(parse_lock(path, decoded, out_dir=out_dir), sha256=digest)
    if lock.manifest != plan.name:
        raise UsageError(
            f"{path}: this lock file is of manifest {lock.manifest!r}, not {plan.name!r}"
        )
    return lock
