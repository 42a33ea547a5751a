"""Validation of a create-task body, as the upstream page describes it (the values each field
may take: the API values table, ``simulator/config.py``).

``parse_create(body)`` returns a ``CreateRequest`` or raises ``InvalidRequest`` whose message
names the field, what was expected and what arrived. Unknown fields (top level or in ``input``)
are accepted and ignored; ``safetyTolerance`` is accepted as is.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flux_pipeline.simulator.config import (
    ASPECT_RATIOS,
    DEFAULTS,
    MAX_IMAGE_URLS,
    MODES,
    OUTPUT_FORMATS,
    PROVIDERS,
    REQUEST_TYPES,
)


class InvalidRequest(Exception):
    """The body breaks the documented rules; answered with code 400 and this message."""


@dataclass(frozen=True, kw_only=True)
class CreateRequest:
    request_type: str
    callback_url: str | None
    provider: str
    mode: str
    prompt: str
    aspect_ratio: str
    output_format: str
    image_urls: tuple[str, ...]
    input: dict[str, Any]  # the input object as received
    raw: dict[str, Any]  # the whole body as received

    @property
    def input_key(self) -> str:
        """The canonical ``input`` object: equal inputs give equal keys whatever the order."""
        return canonical_json(self.input)


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _choice(
    container: dict[str, Any], name: str, where: str, allowed: tuple[str, ...], default: str
) -> str:
    if name not in container or container[name] is None:
        return default
    value = container[name]
    if isinstance(value, str) and value in allowed:
        return value
    expected = ", ".join(repr(a) for a in allowed)
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), allowed, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    raise InvalidRequest(f"{where}{name}: expected one of {expected}, got {value!r}{hint}")


def _image_urls(inp: dict[str, Any]) -> tuple[str, ...]:
    value = inp.get("image_urls")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise InvalidRequest("input.image_urls: expected a list of URL strings")
    if len(value) > MAX_IMAGE_URLS:
        raise InvalidRequest(f"input.image_urls: at most {MAX_IMAGE_URLS} images, got {len(value)}")
    if any(not u.strip() for u in value):
        raise InvalidRequest("input.image_urls: an entry is an empty string")
    return tuple(value)


def parse_create(body: object) -> CreateRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("request body: expected a JSON object")
    inp = body.get("input")
    if inp is None:
        raise InvalidRequest("input: required object is missing")
    if not isinstance(inp, dict):
        raise InvalidRequest(f"input: expected an object, got {type(inp).__name__}")
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("input.prompt: required, a non-empty string")
    request_type = _choice(body, "request_type", "", REQUEST_TYPES, DEFAULTS["request_type"])
    callback_url = body.get("callback_url")
    if request_type == "callback":
        if not isinstance(callback_url, str) or not callback_url:
            raise InvalidRequest("callback_url: required when request_type is 'callback'")
        parts = urlsplit(callback_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"callback_url: expected an http(s) URL, got {callback_url!r}")
    elif callback_url is not None and not isinstance(callback_url, str):
        raise InvalidRequest("callback_url: expected a string")
    return CreateRequest(
        request_type=request_type,
        callback_url=callback_url if request_type == "callback" else None,
        provider=_choice(body, "provider", "", PROVIDERS, DEFAULTS["provider"]),
        mode=_choice(inp, "mode", "input.", MODES, DEFAULTS["mode"]),
        prompt=prompt,
        aspect_ratio=_choice(
            inp, "aspect_ratio", "input.", ASPECT_RATIOS, DEFAULTS["aspect_ratio"]
        ),
        output_format=_choice(
            inp, "output_format", "input.", OUTPUT_FORMATS, DEFAULTS["output_format"]
        ),
        image_urls=_image_urls(inp),
        input=inp,
        raw=body,
    )
