"""Where things live: default paths, and the confinement of every path a manifest names.

Default paths: ``out/<manifest name>`` for outputs, ``OUT/.flux-pipeline/state.sqlite3`` for
the state DB (one DB per shard: ``state-2of3.sqlite3``, and one set of reports per shard:
``report.shard-2of3.json``), and beside it the ``--simulate``
simulator's own state (``state.simulator.db``).

Reading: a manifest may read local files only inside its project.

Manifests arrive in pull requests. A reference image is sent to the API inline, so a manifest
that could name any file could send any image on the runner to a third party. The project is
the git work tree that holds the manifest (the nearest parent with a ``.git``), or the
manifest's own directory when it is in none. Paths are compared after resolving symlinks, so
neither ``..``, an absolute path nor a link leads outside. ``read_inside`` is the one way a
manifest's files (the manifest itself included) are read: confined, only regular files (never
a device or a FIFO, which could block or never end), and at most a given size. Its messages
name the path, never what the file holds.

Writing: output paths are relative to the output directory and must stay inside it
(``inside``); nothing is written anywhere else.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

STATE_DIR = ".flux-pipeline"


def default_out_dir(name: str) -> Path:
    return Path("out") / name


def shard_tag(shard: tuple[int, int]) -> str:
    """``(2, 3)`` -> ``2of3``: how a shard's own files are told apart in a shared directory."""
    return f"{shard[0]}of{shard[1]}"


def default_state_path(out_dir: Path, shard: tuple[int, int] | None = None) -> Path:
    """One DB per shard, so shard runs sharing an output directory never share a DB."""
    name = f"state-{shard_tag(shard)}.sqlite3" if shard else "state.sqlite3"
    return out_dir / STATE_DIR / name


_REPORTS = {"json": ("report", "json"), "markdown": ("report", "md"), "junit": ("junit", "xml")}


def report_name(kind: str, shard: tuple[int, int] | None = None) -> str:
    """The file name of a report (``json``, ``markdown``, ``junit``; docs/reports.md): one set
    per shard (``report.shard-2of3.json``), like the state DB, so shard runs sharing an output
    directory never overwrite each other's report; ``merge`` writes the unsuffixed ones."""
    stem, ext = _REPORTS[kind]
    return f"{stem}.shard-{shard_tag(shard)}.{ext}" if shard else f"{stem}.{ext}"


def simulator_state_path(state_path: Path) -> Path:
    """Where ``run --simulate`` keeps its simulator's tasks: beside the state DB it serves
    (``state.simulator.db``; one per shard, like the DB), so a rerun finds them again."""
    return state_path.with_name(state_path.stem + ".simulator.db")


def project_root(manifest_dir: Path) -> Path:
    start = manifest_dir.resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def outside(root: Path, path: Path) -> str | None:
    """None when ``path`` is inside ``root``, else the one-line reason."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        return f"cannot resolve {path}: {exc}"
    if resolved == root or root in resolved.parents:
        return None
    lexical = Path(os.path.abspath(path))
    how = "leads outside" if lexical == root or root in lexical.parents else "is outside"
    return (
        f"{path} {how} the project directory {root}"
        f"{' through a symbolic link' if how == 'leads outside' else ''}: a manifest may only "
        "read files inside its repository (or its own directory when not in one)"
    )


def read_inside(root: Path, path: Path, max_bytes: int, *, limit: str | None = None) -> bytes | str:
    """The content of the regular file ``path`` if it is inside ``root`` (symlinks resolved)
    and at most ``max_bytes`` long; else the one-line reason (``limit`` words the size rule)."""
    reason = outside(root, path)
    if reason is not None:
        return reason
    rule = limit or f"the limit is {max_bytes} bytes"
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; O_NOFOLLOW: the path was
        # resolved above, a link swapped in since is refused
        fd = os.open(path.resolve(), os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} changed into a link while being read"
        return f"cannot read {path}: {exc.strerror or exc}"
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return f"{path} is a directory, not a file"
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is not a regular file (a device, FIFO or socket is never read)"
        if info.st_size > max_bytes:
            return f"{path} has {info.st_size} bytes; {rule}"
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            return f"{path} has more than {max_bytes} bytes; {rule}"
        return b"".join(chunks)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    finally:
        os.close(fd)


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` for a relative POSIX path that stays inside ``root`` lexically and
    after resolving symlinks; ValueError otherwise."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"output path {relative!r} is not inside the output directory")
    target = root.joinpath(*parts)
    base = root.resolve()
    resolved = target.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"output path {relative!r} leads outside the output directory")
    return target
