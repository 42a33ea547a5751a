"""Secrets out of every output: the API key and the callback secret, in any encoding, become
``[redacted]`` (docs/secrets.md).

A ``Redactor`` knows some secrets and finds each one written as it is, JSON-escaped (``\\/``,
``\\uXXXX`` for any character), URL-encoded (``quote``/``quote_plus``, any mix of ``%XX``),
HTML-escaped, or base64-encoded (standard and URL-safe, with or without padding, at each of
the three alignments inside a longer blob). Secrets shorter than ``MIN_SECRET_CHARS`` are
ignored: they would match ordinary text.

The process keeps one registry (``register``): the API client registers its key and the
runner its callback secret, and every writer of output runs its last pass through ``scrub``
(the state DB's writes, report files, the step summary, workflow commands, and standard
output and error through ``RedactingStream``). With nothing registered ``scrub`` returns its
argument unchanged at once.
"""

from __future__ import annotations

import base64
import contextlib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "RedactingStream",
    "Redactor",
    "active",
    "environment_secrets",
    "register",
    "scope",
    "scrub",
    "scrub_pieces",
    "scrub_value",
    "unredacted",
]

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8
# the characters an escaped or encoded form starts with: without one of them in a text, only
# the literal forms (the secret as it is, its base64) can be there
_ESCAPE_MARKS = ("\\", "%", "&")
# the environment variables that hold a secret: the API key, and the AWS credentials boto3
# reads for storage (docs/storage.md); what boto3 finds elsewhere (a profile) is registered
# by ``run/storage.py``
SECRET_VARIABLES = ("APIXO_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_HTML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}


def _hex_forms(code: int) -> list[str]:
    return [f"(?i:\\\\u{code:04x})"]


def _char_pattern(char: str) -> str:
    """Every way one character of a secret may be written in output we produce or echo."""
    code = ord(char)
    forms = [re.escape(char)]
    if code < 0x10000:
        forms += _hex_forms(code)
    else:  # a JSON surrogate pair
        high = 0xD800 + ((code - 0x10000) >> 10)
        low = 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms.append(f"(?i:\\\\u{high:04x}\\\\u{low:04x})")
    forms.append("".join(f"(?i:%{b:02x})" for b in char.encode("utf-8")))
    forms += [f"&#0*{code};", f"(?i:&#x0*{code:x};)"]
    if char == "/":
        forms.append(re.escape("\\/"))
    if char == " ":
        forms.append(re.escape("+"))
    if char in _HTML_NAMED:
        forms.append(re.escape(_HTML_NAMED[char]))
    return "(?:" + "|".join(forms) + ")"


def base64_forms(secret: str) -> list[str]:
    """The base64 of ``secret`` as it appears inside any longer base64 blob: for each of the
    three byte alignments, the characters that depend on the secret's bytes alone (standard
    and URL-safe alphabets). The secret's own base64 contains the first of them."""
    raw = secret.encode("utf-8")
    forms: list[str] = []
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + raw).decode().rstrip("=")
        first = -(-shift * 8 // 6)  # the first 6-bit group that starts inside the secret
        last = (8 * (shift + len(raw))) // 6  # groups before this one end inside it
        inner = encoded[first:last]
        forms += [inner, inner.replace("+", "-").replace("/", "_")]
    return sorted(set(forms), key=len, reverse=True)


class Redactor:
    """Finds and replaces the given secrets (see the module docstring for the forms)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        kept = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self.secrets = tuple(kept)
        literals: list[str] = []
        patterns: list[str] = []
        for secret in kept:
            literals.append(secret)
            literals += base64_forms(secret)
            patterns.append("".join(_char_pattern(c) for c in secret))
        self._literals = tuple(dict.fromkeys(literals))
        escaped = [re.escape(s) for s in sorted(self._literals, key=len, reverse=True)]
        self._pattern = re.compile("|".join(patterns + escaped)) if kept else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __repr__(self) -> str:
        return f"Redactor({len(self.secrets)} secret(s))"

    def _may_hold(self, text: str) -> bool:
        return any(mark in text for mark in _ESCAPE_MARKS) or any(
            literal in text for literal in self._literals
        )

    def text(self, text: str) -> str:
        """``text`` with every form of every secret replaced by ``[redacted]``."""
        if self._pattern is None or not text or not self._may_hold(text):
            return text
        return self._pattern.sub(REDACTED, text)

    def value(self, value: Any) -> Any:
        """Strings anywhere in ``value`` (dicts, lists, tuples) redacted; the rest as is."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value


def environment_secrets(environ: Mapping[str, str]) -> list[str]:
    """The secrets set in ``environ`` (``SECRET_VARIABLES``)."""
    return [environ.get(name, "").strip() for name in SECRET_VARIABLES]


_lock = threading.Lock()
_registered: tuple[str, ...] = ()
_current = Redactor(())


def register(*secrets: str) -> None:
    """Redact ``secrets`` from everything this process writes from now on (for its life, or
    until the enclosing ``scope`` ends): a run's last lines and errors print after it ends."""
    global _registered, _current
    with _lock:
        added = tuple(s for s in secrets if s and s not in _registered)
        if added:
            _registered += added
            _current = Redactor(_registered)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Secrets registered inside are forgotten when it ends (one CLI command in a test)."""
    global _registered, _current
    with _lock:
        saved = _registered, _current
    try:
        yield
    finally:
        with _lock:
            _registered, _current = saved


def active() -> Redactor:
    """The redactor of every secret registered so far."""
    return _current


def scrub(text: str) -> str:
    return _current.text(text)


def scrub_value(value: Any) -> Any:
    return _current.value(value)


def scrub_params(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """SQL parameters with secrets redacted from their strings; as they are when no secret
    is registered (the common case costs one truth test)."""
    redactor = _current
    if not redactor:
        return params
    return tuple(redactor.text(p) if isinstance(p, str) else p for p in params)


def scrub_pieces(pieces: Iterable[str]) -> Iterator[str]:
    """A streamed text redacted piece by piece (a secret never spans two pieces of ours:
    pieces break between values)."""
    redactor = _current
    for piece in pieces:
        yield redactor.text(piece)


class RedactingStream:
    """A text stream (standard output or error) whose writes are redacted first; everything
    else is the wrapped stream's."""

    def __init__(self, stream: IO[str]) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(scrub(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def unredacted(stream: Any) -> Any:
    """The stream under a ``RedactingStream`` (for ``::add-mask::``, which must name the
    secret), else ``stream`` itself."""
    while isinstance(stream, RedactingStream):
        stream = stream.wrapped
    return stream
