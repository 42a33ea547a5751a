"""Caps on what one API answer may hold, so a hostile or broken answer costs one task at most.

docs/api-contract.md, "Caps on answers". Each cap gives a clear one-line error (or, for the
times, an unknown value) instead of a crash further down (a RecursionError in ``json.loads``,
an integer the state DB cannot store, a multi-line failure reason in a report).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

import httpx

from flux_pipeline import redact

MAX_ANSWER_BYTES = 1024 * 1024  # an API answer body, after Content-Encoding is undone
MAX_JSON_DEPTH = 64  # nested arrays/objects in an answer (and in its resultJson string)
MAX_RESULT_URLS = 100  # result URLs of one task
MAX_URL_CHARS = 8192  # one result URL (signed object-store URLs run to ~2,000)
MAX_FAIL_CODE_CHARS = 100  # failCode, after escaping
MAX_TEXT_CHARS = 500  # failMsg and an error envelope's message, after escaping
MAX_TIME = 2**63 - 1  # createTime, completeTime, costTime: what SQLite's INTEGER holds

_MIB = 1024 * 1024
# a JSON string literal (escapes included); possessive, so hostile input stays linear
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# control, format, surrogate and line/paragraph separator characters: escaped in texts
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _size(limit: int) -> str:
    if limit % _MIB == 0:
        return f"{limit // _MIB} MiB"
    return f"{limit} bytes"


async def read_capped(response: httpx.Response, limit: int = MAX_ANSWER_BYTES) -> bytes | str:
    """The decoded body, or (a ``str``) why it could not be read: larger than ``limit`` (we
    stop reading there) or not matching its Content-Encoding."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return f"answer larger than {_size(limit)}"
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                return f"answer larger than {_size(limit)}"
            chunks.append(chunk)
    except httpx.DecodingError:
        return "answer body cannot be decoded"
    return b"".join(chunks)


def json_depth(content: bytes) -> int:
    """How deep arrays and objects nest in ``content`` (brackets inside strings not counted),
    found without recursion: safe on any input."""
    brackets = _STRING.sub(b"", content).translate(None, _NOT_BRACKETS)
    openers = brackets.count(b"[") + brackets.count(b"{")
    if openers <= MAX_JSON_DEPTH:
        return openers  # an upper bound, and within the cap: nothing to count
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class TooDeepError(ValueError):
    """JSON nested deeper than ``MAX_JSON_DEPTH``."""


def loads(content: bytes | str, what: str = "answer") -> Any:
    """``json.loads`` within ``MAX_JSON_DEPTH``. Raises ``ValueError`` for invalid JSON and
    ``TooDeepError`` (one line) for nesting beyond the cap, never ``RecursionError``."""
    raw = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise TooDeepError(f"{what} nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(content)
    except RecursionError:  # unreachable after the scan; kept as the last line of defence
        raise TooDeepError(f"{what} nested deeper than {MAX_JSON_DEPTH} levels") from None


def bounded_int(value: Any) -> int | None:
    """A time or duration field: an integer (or integral float) in 0..MAX_TIME, else None
    (unknown): a wrong or absurd number is not worth failing a task over, nor storing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_TIME:
        return None
    return value


def _escape(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` characters: secrets redacted
    first (``redact``: before a cut could leave part of one), control characters
    (newlines, escape sequences), invisible format characters and lone surrogates escaped
    as ``\\n``/``\\xNN``/``\\uNNNN``; a longer text cut (never inside an escape), ending
    in "..."."""
    # the part that can show, and room for any encoded secret starting in it
    text = redact.scrub(text[: 16 * limit + 1024])
    pieces = [_escape(c) for c in text[: limit + 1]]
    if len(text) <= limit and sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    room = max(0, limit - 3)
    for piece in pieces:
        if len(piece) > room:
            break
        kept.append(piece)
        room -= len(piece)
    return "".join(kept) + "..."
