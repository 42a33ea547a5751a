"""One run at a time per state DB and per output directory: the lease.

A run holds two exclusive locks for as long as it runs: ``OUT/.flux-pipeline/lease`` in its
output directory and ``<state DB>.lock`` beside its state DB (``--state`` may put the DB
elsewhere). Two runs conflict when they share either: the same output directory with two
state DBs (they would overwrite each other's images and reports), or one state DB with two
output directories (they would create every task twice). A second run exits 2 at once,
naming the holder, before anything is sent.

The locks are ``flock(2)`` locks, taken with ``LOCK_NB``: acquiring never waits, so it is
safe to call from the event loop. The kernel drops a lock when its holder dies, even by
``kill -9``, so a dead run's lease is simply taken over; what is written in the file (the
holder's pid, host, command and start time) only names the holder for the error message,
and stale or garbage content is overwritten. A lock belongs to the open file, which is not
inherited by child processes started with ``subprocess`` (Python opens it close-on-exec);
a child forked without exec (``multiprocessing`` "fork") would keep it alive.

Lock files are never deleted, not even on release: a process may have opened the file but not
yet locked it, and if the path were unlinked it would go on to lock a file no one else can
reach, while a third process creates and locks a new one: two holders. They are a few bytes
each. (If something else deletes one mid-run, ``acquire_lease`` notices that the locked file
is no longer the one at the path and tries again.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flux_pipeline.errors import LeaseHeldError, StateError
from flux_pipeline.layout import STATE_DIR

LEASE_NAME = "lease"
_MAX_HOLDER_BYTES = 4096
# a second run that finds the lock taken in the moment between the holder's lock and its line
# reads again for up to 0.2 s, so the refusal names the holder
_HOLDER_READS = 20
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def out_lock_path(out_dir: Path) -> Path:
    return out_dir / STATE_DIR / LEASE_NAME


def state_lock_path(state_path: Path) -> Path:
    return state_path.with_name(f"{state_path.name}.lock")


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Who holds a lease, as written into its lock files."""

    pid: int
    host: str
    command: str
    since: str  # ISO 8601 UTC, e.g. 2026-12-01T10:22:03Z

    def line(self) -> str:
        return json.dumps(
            {"pid": self.pid, "host": self.host, "command": self.command, "since": self.since}
        )


@dataclass(slots=True)
class Lease:
    """Both locks of one run. ``release`` (or leaving ``hold_lease``) lets them go."""

    holder: Holder
    paths: tuple[Path, ...]
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        while self._fds:
            _unlock(self._fds.pop())

    @property
    def held(self) -> bool:
        return bool(self._fds)


def acquire_lease(state_path: Path, out_dir: Path, *, command: str) -> Lease:
    """Take the output directory's lock, then the state DB's. Never waits: raises
    ``LeaseHeldError`` when another run holds either, ``StateError`` when a lock file cannot
    be created or locked. ``command`` names this run to a second one (no secrets in it)."""
    holder = Holder(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=" ".join(command.split()),
        since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    targets = ((out_lock_path(out_dir), str(out_dir)), (state_lock_path(state_path), None))
    lease = Lease(holder=holder, paths=tuple(path for path, _ in targets))
    try:
        for path, shown in targets:
            lease._fds.append(_lock(path, holder, shown or f"state DB {state_path}"))
    except BaseException:
        lease.release()
        raise
    return lease


@contextlib.contextmanager
def hold_lease(state_path: Path, out_dir: Path, *, command: str) -> Iterator[Lease]:
    """``acquire_lease`` for the length of a ``with`` block (usable inside async code: it
    never blocks)."""
    lease = acquire_lease(state_path, out_dir, command=command)
    try:
        yield lease
    finally:
        lease.release()


def _lock(path: Path, holder: Holder, shown: str) -> int:
    """Open, lock and stamp one lock file; its descriptor."""
    for _ in range(3):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_holder(fd)
            for _ in range(_HOLDER_READS):  # the holder stamps its line right after it locks
                if who.get("pid"):
                    break
                time.sleep(0.01)
                who = _read_holder(fd)
            os.close(fd)
            raise LeaseHeldError(
                f"{shown} is in use by another flux-pipeline run ({_describe(who)}): "
                "wait for it or stop it",
                path=str(path),
                holder=who,
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in _UNSUPPORTED:
                raise StateError(
                    f"{path}: cannot lock: the file system does not support locks "
                    f"({exc.strerror}); put the output directory and the state DB on a "
                    "local disk"
                ) from exc
            raise StateError(f"{path}: cannot lock: {exc.strerror or exc}") from exc
        if _still_at(fd, path):
            break
        _unlock(fd)  # someone deleted or replaced the file meanwhile: lock the new one
    else:
        raise StateError(f"{path}: the lock file keeps being replaced; is something deleting it?")
    try:
        data = (holder.line() + "\n").encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError as exc:
        _unlock(fd)
        raise StateError(f"{path}: cannot write the lock file: {exc.strerror or exc}") from exc
    return fd


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        verb = "open" if os.path.lexists(path) else "create"
        raise StateError(f"{path}: cannot {verb} the lock file: {exc.strerror or exc}") from exc


def _still_at(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _unlock(fd: int) -> None:
    """Empty the file (so it names no one), unlock, close. Never unlinked: see the top."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _read_holder(fd: int) -> dict[str, str]:
    """What the holder wrote, leniently: {} when missing, partial or garbage."""
    try:
        first = os.pread(fd, _MAX_HOLDER_BYTES, 0).split(b"\n", 1)[0]
        data = json.loads(first.decode("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        key: " ".join(str(data[key]).split())[:200]
        for key in ("pid", "host", "command", "since")
        if key in data
    }


def _describe(holder: dict[str, str]) -> str:
    if not holder.get("pid"):
        return "holder not recorded"
    text = f"pid {holder['pid']}"
    if holder.get("host"):
        text += f" on host {holder['host']}"
    if holder.get("since"):
        text += f", since {holder['since']}"
    if holder.get("command"):
        text += f", running {holder['command']!r}"
    return text
