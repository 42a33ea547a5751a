"""The review file ``<manifest stem>.review.json`` next to the manifest: the decisions a person
made on the results (docs/reports.md#the-review-file). This module is its one reader and writer.

    {"decisions": {"<task key>": {"decision": "picked", "id": "<readable id>", "step": "hero"}},
     "format": 1, "manifest": "demo.yaml"}

Keyed by task key, which stays the same across reruns (docs/keys.md); ``id`` and ``step`` are
there for a person reading the file or its diff. The text is deterministic: sorted keys,
indent 2, a trailing newline, so it diffs cleanly in git. A decision for a key the plan no
longer has is kept (orphaned) and reported, never an error.

A review file is untrusted input (a pull request may edit it): ``read_review`` checks every
field and raises a ``ManifestError`` with one line per problem, ``FILE: decisions.<key>.decision:
expected ...`` (at most ``MAX_PROBLEMS``), exit 2. A file over ``MAX_BYTES`` (16 MiB: some
100,000 decisions) is refused before it is read, and nesting is refused by the JSON reader's
own recursion limit, so a hostile file cannot exhaust memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from flux_pipeline.errors import Diagnostic, ManifestError, did_you_mean
from flux_pipeline.manifest.diagnostics import describe
from flux_pipeline.media import write_atomic
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.review_gate import DECISIONS, apply_review
from flux_pipeline.report.lockcheck import shown
from flux_pipeline.report.lockfile import beside_manifest

FORMAT = 1
SUFFIX = ".review.json"
MAX_BYTES = 16 * 1024 * 1024
MAX_TEXT = 1000  # characters of an ``id`` or ``step``
MAX_PROBLEMS = 20
TOP_KEYS = ("decisions", "format", "manifest")
ENTRY_KEYS = ("decision", "id", "step")
_KEY = re.compile(r"^[0-9a-f]{64}$")


def review_path_for(manifest: Path) -> Path:
    """``pipelines/demo.yaml`` -> ``pipelines/demo.review.json``."""
    return beside_manifest(manifest, SUFFIX)


@dataclass(frozen=True, slots=True)
class Decision:
    """One task's decision: ``picked`` or ``rejected``, with its readable id and step."""

    decision: str
    id: str
    step: str

    def to_json(self) -> dict[str, str]:
        return {"decision": self.decision, "id": self.id, "step": self.step}


@dataclass(frozen=True, slots=True)
class Review:
    """A review file read (or about to be written)."""

    path: Path
    manifest: str  # the manifest's file name
    decisions: Mapping[str, Decision]

    def verdicts(self) -> dict[str, str]:
        """Task key -> decision: what the plan's gate and the gallery take."""
        return {key: d.decision for key, d in self.decisions.items()}


class _Problems:
    def __init__(self, path: Path) -> None:
        self.file = str(path)
        self.found: list[Diagnostic] = []

    def add(self, where: str, message: str) -> None:
        if len(self.found) < MAX_PROBLEMS:
            text = f"{where}: {message}" if where else message
            self.found.append(Diagnostic(file=self.file, line=0, column=0, message=text))

    def stop(self, where: str, message: str) -> NoReturn:
        self.add(where, message)
        raise ManifestError(self.found)

    def unknown_keys(self, where: str, data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = did_you_mean(key, list(allowed))
                expected = ", ".join(allowed)
                self.add(where, f"unknown key {shown(key)}{hint}; expected one of: {expected}")
        for key in allowed:
            if key not in data:
                self.add(where, f"missing required key {key!r}")


def _pairs(problems: _Problems) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                problems.add("", f"key {shown(key)} given twice in one object")
            result[key] = value
        return result

    return hook


def _text(problems: _Problems, where: str, value: object) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(where, f"expected a non-empty string, {describe(value)}")
        return None
    if len(value) > MAX_TEXT:
        problems.add(where, f"expected at most {MAX_TEXT} characters, found {len(value)}")
        return None
    return value


def _decision(problems: _Problems, where: str, value: object) -> str | None:
    if isinstance(value, str) and value in DECISIONS:
        return value
    hint = did_you_mean(value, list(DECISIONS)) if isinstance(value, str) else ""
    problems.add(where, f"expected one of 'picked' or 'rejected', {describe(value)}{hint}")
    return None


def _entry(problems: _Problems, where: str, entry: object) -> Decision | None:
    if not isinstance(entry, dict):
        problems.add(where, f"expected a mapping with decision, id and step, {describe(entry)}")
        return None
    problems.unknown_keys(where, entry, ENTRY_KEYS)
    if any(key not in entry for key in ENTRY_KEYS):
        return None  # reported
    decision = _decision(problems, f"{where}.decision", entry["decision"])
    rid = _text(problems, f"{where}.id", entry["id"])
    step = _text(problems, f"{where}.step", entry["step"])
    if decision is None or rid is None or step is None:
        return None
    return Decision(decision, rid, step)


def parse_review(path: Path, content: str, *, manifest: str | None = None) -> Review:
    """The review ``content`` (read from ``path``), every field checked; with ``manifest``
    (the manifest's file name), the file must be of that manifest. Raises ``ManifestError``."""
    problems = _Problems(path)
    try:
        document = json.loads(
            content,
            object_pairs_hook=_pairs(problems),
            parse_constant=lambda name: problems.stop("", f"{name} is not JSON"),
        )
    except RecursionError:
        problems.stop("", "not a review file: nested too deeply")
    except ValueError as exc:
        problems.stop("", f"not JSON: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    if not isinstance(document, dict):
        problems.stop("", f"expected a JSON object, {describe(document)}")
    problems.unknown_keys("", document, TOP_KEYS)
    version = document.get("format", FORMAT)
    if version != FORMAT or isinstance(version, bool):
        found = describe(version)
        problems.add("format", f"expected {FORMAT} (the format this version reads), {found}")
    named = _text(problems, "manifest", document["manifest"]) if "manifest" in document else None
    if named is not None and manifest is not None and named != manifest:
        problems.add("manifest", f"this review file is of {shown(named)}, not {shown(manifest)}")
    raw = document.get("decisions", {})
    decisions: dict[str, Decision] = {}
    if not isinstance(raw, dict):
        problems.add("decisions", f"expected a mapping keyed by task key, {describe(raw)}")
        raw = {}
    for key, entry in raw.items():
        if not _KEY.match(key):
            problems.add(f"decisions.{shown(key)}", "not a task key (64 lowercase hex digits)")
            continue
        decision = _entry(problems, f"decisions.{key}", entry)
        if decision is not None:
            decisions[key] = decision
    if problems.found:
        raise ManifestError(problems.found)
    return Review(path=path, manifest=named or "", decisions=decisions)


def read_review(path: Path, *, manifest: str | None = None) -> Review | None:
    """The review file at ``path`` (None when there is none), checked (``parse_review``)."""
    problems = _Problems(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        problems.stop("", "not a file")
    except OSError as exc:
        problems.stop("", f"cannot read the review file: {exc.strerror or exc}")
    if len(raw) > MAX_BYTES:
        problems.stop("", f"larger than {MAX_BYTES // (1024 * 1024)} MiB: not a review file")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.stop("", "not UTF-8 text")
    return parse_review(path, content, manifest=manifest)


def review_decisions(path: Path | None, *, manifest: str | None = None) -> dict[str, str]:
    """Task key -> ``picked``/``rejected`` from the review file at ``path`` (``{}`` without
    one): what the gallery and the plan's gate (``plan/review_gate.py``) take."""
    if path is None:
        return {}
    review = read_review(path, manifest=manifest)
    return review.verdicts() if review is not None else {}


def review_text(manifest: str, decisions: Mapping[str, Decision]) -> str:
    """The file's text: sorted keys, indent 2, a trailing newline."""
    document = {
        "decisions": {key: decisions[key].to_json() for key in sorted(decisions)},
        "format": FORMAT,
        "manifest": manifest,
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_review(path: Path, manifest: str, decisions: Mapping[str, Decision]) -> None:
    """Write the review file atomically (``media.write_atomic``)."""
    write_atomic(path, review_text(manifest, decisions))


def reviewed_plan(plan: Plan, path: Path | None) -> tuple[Plan, Review | None]:
    """``plan`` gated by the review file at ``path`` (``plan/review_gate.py``), and the file
    read (None: none, or ``path`` None for ``--no-review``). Without a file and a gated step
    the plan is unchanged; with a gated step and no file every parent is undecided."""
    review = read_review(path, manifest=plan.manifest_path.name) if path is not None else None
    if review is None and not plan.gates:
        return plan, None
    return apply_review(plan, review.verdicts() if review is not None else {}), review
