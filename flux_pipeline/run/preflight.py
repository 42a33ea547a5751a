"""Check before paying: can this run write its outputs and its state DB at all?

A task is billed when it is created, so a run that finds out only at its first download (or
its first state write) that the output directory is read-only, or the disk full, has paid
for every task it sent. ``check_writable`` is called before the first create: it does, in the
output directory and in the state DB's directory, what the run will do there (create the
directory, create a hidden temporary file, write it, fsync it, rename it, remove it: the
pattern of ``media.atomic_target``), and asks for a minimum of free space. Anything wrong is
an ``OutputsNotWritableError`` (exit 2, one line naming the path and the reason).

It also refuses output paths that a link already in the output directory would lead outside
it (``check_outputs``).

It cannot promise the disk stays writable (another process may fill it meanwhile); it makes
the common mistakes (a read-only mount, a path through a file, a full disk) cost nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from flux_pipeline.errors import OutputsNotWritableError
from flux_pipeline.layout import inside
from flux_pipeline.media import atomic_target

MIN_FREE_BYTES = 64 * 1024 * 1024  # a few dozen result images, the report and the state DB
_PROBE = b"flux-pipeline write check\n"


def check_writable(
    out_dir: Path,
    state_path: Path,
    *,
    min_free_bytes: int = MIN_FREE_BYTES,
    outputs: Iterable[str] = (),
) -> None:
    """Raise ``OutputsNotWritableError`` unless ``out_dir`` and the directory of
    ``state_path`` can be created and written, with ``min_free_bytes`` free on each file
    system, and no output path (relative to ``out_dir``) leads outside ``out_dir`` through a
    link already there. Leaves nothing behind but the directories it created."""
    _check_directory("output directory", out_dir, min_free_bytes)
    check_outputs(out_dir, outputs)
    state_dir = state_path.parent
    if not _same_directory(state_dir, out_dir):
        _check_directory("state DB directory", state_dir, min_free_bytes)
    _check_state_file(state_path)


def _fail(what: str, path: Path, problem: str) -> OutputsNotWritableError:
    return OutputsNotWritableError(f"{what} {path}: {problem}")


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    return exc.strerror or str(exc)


def _check_directory(what: str, directory: Path, min_free_bytes: int) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise _fail(what, directory, "cannot create it: exists and is not a directory") from exc
    except OSError as exc:
        raise _fail(what, directory, f"cannot create it: {_reason(exc)}") from exc
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise _fail(what, directory, f"cannot read its free space: {_reason(exc)}") from exc
    if free < min_free_bytes:
        raise _fail(
            what,
            directory,
            f"only {_size(free)} free on its file system; a run needs at least "
            f"{_size(min_free_bytes)}",
        )
    probe = directory / f".flux-pipeline-write-check.{secrets.token_hex(4)}"
    try:
        with atomic_target(probe) as temp, temp.open("wb") as fh:
            fh.write(_PROBE)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        raise _fail(what, directory, f"cannot write files there: {_reason(exc)}") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def check_outputs(out_dir: Path, outputs: Iterable[str]) -> None:
    """Refuse, before anything is sent, output paths that a link in ``out_dir`` (say
    ``out/sym -> /elsewhere`` for ``output: sym/evil``) would lead outside it. The same check
    runs again when each file is written (``run/downloader.py``)."""
    checked: set[str] = set()
    for output in outputs:
        parts = PurePosixPath(output).parts
        for end in range(1, len(parts) + 1):
            relative = "/".join(parts[:end])
            if relative in checked:
                continue
            checked.add(relative)
            if end == len(parts) and not (out_dir / relative).is_symlink():
                continue  # a file not there yet, or not a link: nothing to resolve
            try:
                inside(out_dir, relative)
            except ValueError:
                raise _fail(
                    "output directory",
                    out_dir,
                    f"output path {output!r} leads outside it through the link {relative}: "
                    "remove the link (nothing was sent)",
                ) from None


def _check_state_file(state_path: Path) -> None:
    """An existing state DB must be a file this process can open for writing (the open
    changes nothing in it)."""
    if state_path.is_dir():
        raise _fail("state DB", state_path, "is a directory, not a file")
    if not state_path.exists():
        return
    try:
        fd = os.open(state_path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail("state DB", state_path, f"cannot open it to write: {_reason(exc)}") from exc
    os.close(fd)


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _size(count: int) -> str:
    if count >= 1 << 30:
        return f"{count / (1 << 30):.1f} GiB"
    return f"{count / (1 << 20):.1f} MiB"
