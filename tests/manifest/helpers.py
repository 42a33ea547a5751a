"""Shared helpers: write a manifest (and its files) into a directory, plan it, catch errors."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from flux_pipeline.errors import ManifestError
from flux_pipeline.plan.expand import Plan, load_plan


def png(color: tuple[int, int, int] = (200, 60, 40), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write(directory: Path, text: str, files: dict[str, bytes | str] | None = None) -> Path:
    for name, content in (files or {}).items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    manifest = directory / "m.yaml"
    manifest.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return manifest


def plan_of(directory: Path, text: str, files: dict[str, bytes | str] | None = None) -> Plan:
    return load_plan(write(directory, text, files), file="m.yaml")


def errors_of(directory: Path, text: str, files: dict[str, bytes | str] | None = None) -> list[str]:
    """The diagnostics (``m.yaml:L:C: message``) of an invalid manifest."""
    with pytest.raises(ManifestError) as caught:
        plan_of(directory, text, files)
    return [str(d) for d in caught.value.diagnostics]


def ids(plan: Plan) -> list[str]:
    return [task.readable_id for task in plan.tasks]
