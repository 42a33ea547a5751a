"""``load_manifest(path)``: read, parse and validate a manifest (docs/manifest.md).

It reads the file, parses it with ``yamlload`` (which records where every value sits),
validates it against ``models.Manifest`` and returns a ``LoadedManifest``. Every pydantic
error becomes a located, readable diagnostic (``diagnostics``); all of them are reported
together in one ``ManifestError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from flux_pipeline.errors import Diagnostic, ManifestError
from flux_pipeline.layout import project_root, read_inside
from flux_pipeline.manifest.diagnostics import describe, diagnostic
from flux_pipeline.manifest.models import Manifest
from flux_pipeline.manifest.yamlload import Located, Path_, load_yaml
from flux_pipeline.media import sha256_bytes

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    """A valid manifest model, the source it came from and where its values are."""

    model: Manifest
    path: Path
    sha256: str
    located: Located


def read_manifest_text(path: Path, file: str) -> tuple[str, str]:
    """The manifest's text and the sha256 of its bytes; unreadable or non-UTF-8 -> error.

    Like every file a manifest names, it is read only inside its project (the manifest's own
    path decides the project; a link leading elsewhere is refused), only if it is a regular
    file, and at most ``MAX_MANIFEST_BYTES`` of it (``layout.read_inside``)."""
    content = read_inside(project_root(path.parent), path, MAX_MANIFEST_BYTES)
    if isinstance(content, str):  # names the path only: never what the file holds
        message = f"cannot read the manifest: {content}"
        raise ManifestError([Diagnostic(file=file, line=0, column=0, message=message)])
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = content[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        message = f"the manifest is not valid UTF-8 (byte 0x{content[exc.start]:02x})"
        raise ManifestError(
            [Diagnostic(file=file, line=line, column=column, message=message)]
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        message = "the manifest contains a NUL character"
        raise ManifestError([Diagnostic(file=file, line=line, column=1, message=message)])
    return text, sha256_bytes(content)


def load_manifest(path: Path, *, file: str | None = None) -> LoadedManifest:
    """Read and validate ``path``. Raises ``ManifestError`` with every located problem."""
    file = file if file is not None else str(path)
    text, sha256 = read_manifest_text(path, file)
    located = load_yaml(text, file, as_text=written_as_text)
    if not isinstance(located.data, dict):
        found = describe(located.data)
        raise ManifestError(
            [located.diag((), f"expected a mapping with `version`, `name` and `steps`, {found}")]
        )
    try:
        model = Manifest.model_validate(located.data)
    except ValidationError as exc:
        errors = [diagnostic(located, error) for error in exc.errors()]
        raise ManifestError(_dedupe(errors)) from None
    return LoadedManifest(model=model, path=path, sha256=sha256, located=located)


def written_as_text(path: Path_) -> bool:
    """Values as written (docs/manifest.md): every plain scalar in ``vars`` and in a step's
    matrix (axis values, ``include``/``exclude`` entries) is the text the user wrote. Nothing
    there is a number or a boolean the schema needs; everywhere else YAML types apply."""
    if len(path) >= 2 and path[0] == "vars":
        return True
    return len(path) >= 5 and path[0] == "steps" and path[2] == "matrix"


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[Diagnostic] = set()
    result: list[Diagnostic] = []
    for d in diagnostics:
        if d not in seen:
            seen.add(d)
            result.append(d)
    return sorted(result, key=lambda d: (d.line, d.column))
