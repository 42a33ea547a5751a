"""Shared helpers: write a manifest (and its files) into a directory, plan it, catch errors."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from flux_pipeline.errors import Diagnostic, ManifestError
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.plan.stream import open_stream
from flux_pipeline.plan.tasks import TaskSpec


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
    """The plan of a manifest; its streamed plan (plan/stream.py) is checked to be the same:
    the same tasks in the same order and the same warnings, or the same diagnostics."""
    path = write(directory, text, files)
    try:
        plan = load_plan(path, file="m.yaml")
    except ManifestError as exc:
        problems = list(exc.diagnostics)
        same = _timeless(streamed(path)) == _timeless(problems)
        if not same:
            raise AssertionError(f"the streamed plan differs: {problems}") from exc
        raise
    assert streamed(path) == (list(plan.tasks), plan.warnings)
    return plan


def _timeless(found: object) -> object:
    """Diagnostics with the task a render-time budget ran out at left out: where a clock
    runs out differs from one pass to the next (plan/budget.py)."""
    if not isinstance(found, list):
        return found
    return [
        dataclasses.replace(d, message=_AT_TASK.sub("(in task ...)", d.message))
        if "to render in all" in d.message
        else d
        for d in found
    ]


_AT_TASK = re.compile(r"\(in task [^)]*\)")


def streamed(
    path: Path, file: str = "m.yaml", strict: bool = False
) -> tuple[list[TaskSpec], tuple[Diagnostic, ...]] | list[Diagnostic]:
    """The tasks and warnings of the streamed plan of ``path``, or its diagnostics."""
    try:
        stream = open_stream(path, file=file)
        stream.check(strict=strict)
    except ManifestError as exc:
        return list(exc.diagnostics)
    return list(stream.tasks()), stream.warnings


def errors_of(directory: Path, text: str, files: dict[str, bytes | str] | None = None) -> list[str]:
    """The diagnostics (``m.yaml:L:C: message``) of an invalid manifest."""
    with pytest.raises(ManifestError) as caught:
        plan_of(directory, text, files)
    return [str(d) for d in caught.value.diagnostics]


def ids(plan: Plan) -> list[str]:
    return [task.readable_id for task in plan.tasks]


ROOT = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 1 << 30  # address space of a CLI run that must refuse, not allocate, GBs


def cli_limited(
    cwd: Path, *args: str, timeout: float = 60.0, memory: int = MEMORY_LIMIT
) -> subprocess.CompletedProcess[str]:
    """``flux-pipeline ARGS`` in ``cwd`` with ~1 GB of address space (``memory``) and a timeout:
    a manifest that would exhaust memory or time shows as a MemoryError, a kill or
    ``TimeoutExpired``."""

    def _limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
        check=False,
    )


# What a user's runs and reviews leave beside the shipped manifests (the README's first command
# writes pipelines/demo.lock.json; .gitignore lists the examples' locks): not the examples.
LEFT_BY_USERS = ("*.lock.json", "*.review.json")


def copy_examples(source: Path, target: Path) -> Path:
    """The examples of ``source`` (pipelines/) copied to ``target``, as a fresh checkout has
    them: without the lock and review files a user's run left there, which a test's plan or
    run would otherwise adopt."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*LEFT_BY_USERS))
    return target
