"""What a planned task is: the seam between expansion (``expand``) and execution (``engine``).

A ``TaskSpec`` is immutable and small: plans of 100,000 tasks stay in memory. Its request holds
*references* instead of bulky or not-yet-known values, resolved only when the task is submitted:

- ``LOCAL_IMAGE_PREFIX + sha256`` stands for a local reference file (sent inline as a ``data:``
  URI), so the request and the key carry the file's content hash, never its bytes;
- ``PARENT_IMAGE_URL`` stands for the result URL of the parent's output image (chained edits are
  planned before their parent has run).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

LOCAL_IMAGE_PREFIX = "flux-pipeline:local-image:sha256:"
PARENT_IMAGE_URL = "flux-pipeline:parent-image-url"

IMAGE_EXTENSIONS = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}


# One encoder, built once: ``json.dumps`` with these settings builds one per call, and so does
# ``JSONEncoder.encode`` (its C encoder). The C encoder is made once here, without the check
# for circular values: a manifest's values cannot contain themselves (manifest/yamlload.py
# refuses recursive aliases, a template renders a string); the output is ``encode``'s.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
try:
    from _json import make_encoder

    _C_ENCODE: make_encoder | None = make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, True
    )
except ImportError:  # a Python without the json module's C part
    _C_ENCODE = None


def canonical_json(value: Any) -> str:
    """The one serialisation keys are computed over: sorted keys, no spaces, UTF-8 text."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def task_key(
    request: Mapping[str, Any],
    *,
    parent_key: str | None,
    parent_output_index: int | None,
    repeat_index: int,
    generation: int = 0,
) -> str:
    """SHA-256 over the canonical request and its lineage (docs/keys.md)."""
    return key_of_request_json(
        canonical_json(request),
        parent_key=parent_key,
        parent_output_index=parent_output_index,
        repeat_index=repeat_index,
        generation=generation,
    )


def key_of_request_json(
    request_json: str,
    *,
    parent_key: str | None,
    parent_output_index: int | None,
    repeat_index: int,
    generation: int = 0,
) -> str:
    """``task_key`` of a request already in canonical JSON: where every task key is computed.

    The material hashed is ``canonical_json({"parent": lineage, "repeat": repeat_index,
    "request": request})`` (docs/keys.md), written out here so that a request encoded once
    (``TaskSpec.request_json``) is not encoded again; lineage is ``[parent_key, output index]``
    or ``null`` for a root task. Keys are hex digests: they need no JSON escaping. A deliberate
    regeneration (``generation`` > 0, plan/generations.py) adds ``"generation": N`` first (it
    sorts first), so generation 0 is the key every task always had.
    """
    if parent_key:
        index = "null" if parent_output_index is None else parent_output_index
        lineage = f'["{parent_key}",{index}]'
    else:
        lineage = "null"
    again = f'"generation":{generation},' if generation else ""
    material = f'{{{again}"parent":{lineage},"repeat":{repeat_index},"request":{request_json}}}'
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """One create-task request, fully rendered except for the references above."""

    key: str  # task_key(...) of this task
    readable_id: str  # step@axis=value,...#repeat (chained: parent's readable id + "/" + own)
    step: str
    parent_key: str | None  # None for a root task
    parent_output_index: int | None  # which of the parent's output images this edits
    repeat_index: int  # 1-based
    request_json: str  # canonical_json({"provider": ..., "input": {...}}); no request_type
    output: str  # output path relative to OUT, without extension ("hero/mug-watercolor-1")
    output_format: str  # the API's output_format ("png", "jpeg", "webp")
    cell: tuple[tuple[str, str], ...] = ()  # own matrix cell: (axis, value label), id order
    generation: int = 0  # deliberate regenerations of this request (plan/generations.py)

    @property
    def base_key(self) -> str:
        """The key of generation 0 of this request and lineage: what names the task across
        its regenerations (the key itself when it was never regenerated)."""
        if not self.generation:
            return self.key
        return key_of_request_json(
            self.request_json,
            parent_key=self.parent_key,
            parent_output_index=self.parent_output_index,
            repeat_index=self.repeat_index,
        )

    @property
    def request(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.request_json)
        return value

    @property
    def extension(self) -> str:
        return IMAGE_EXTENSIONS.get(self.output_format.lower(), self.output_format.lower())

    def output_paths(self, count: int) -> list[str]:
        """Relative file paths for ``count`` result images: ``x.png`` or ``x-1.png, x-2.png``."""
        if count == 1:
            return [f"{self.output}.{self.extension}"]
        return [f"{self.output}-{i}.{self.extension}" for i in range(1, count + 1)]


def at_generation(
    task: TaskSpec, parent_key: str | None, generations: Mapping[str, int]
) -> TaskSpec:
    """``task`` under ``parent_key`` (its parent's key, which a regeneration may have changed)
    at the generation ``generations`` records for it (base key -> generation; none: 0)."""
    if parent_key == task.parent_key and not generations and not task.generation:
        return task
    base = key_of_request_json(
        task.request_json,
        parent_key=parent_key,
        parent_output_index=task.parent_output_index,
        repeat_index=task.repeat_index,
    )
    generation = generations.get(base, 0)
    key = base
    if generation:
        key = key_of_request_json(
            task.request_json,
            parent_key=parent_key,
            parent_output_index=task.parent_output_index,
            repeat_index=task.repeat_index,
            generation=generation,
        )
    if key == task.key:
        return task
    return dataclasses.replace(task, key=key, parent_key=parent_key, generation=generation)


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` (JSON-like) with ``change`` applied to every string in it; a new object."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [map_strings(v, change) for v in value]
    if isinstance(value, dict):
        return {k: map_strings(v, change) for k, v in value.items()}
    return value


def resolve_request(
    request: dict[str, Any],
    *,
    parent_image_url: str | None,
    local_image: Callable[[str], str],
) -> dict[str, Any]:
    """Replace the references in ``request`` by real values, returning a new dict.

    ``local_image(sha256)`` returns the ``data:`` URI of a local reference file.
    """

    def resolve(value: str) -> str:
        if value.startswith(LOCAL_IMAGE_PREFIX):
            return local_image(value[len(LOCAL_IMAGE_PREFIX) :])
        if PARENT_IMAGE_URL in value:
            if parent_image_url is None:
                raise ValueError("parent image URL is not known yet")
            return value.replace(PARENT_IMAGE_URL, parent_image_url)
        return value

    resolved: dict[str, Any] = map_strings(request, resolve)
    return resolved


def data_uri(content: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"
