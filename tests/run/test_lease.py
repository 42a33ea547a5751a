"""The lease: one run at a time per state DB and per output directory.

Holders are real processes (a tiny Python snippet that takes the lease, prints ``held`` and
waits for a line on stdin), so the locks are tested across processes, including a holder
killed with SIGKILL. Waiting is on the holder's printed lines, never on time.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from flux_pipeline.errors import ExitCode, LeaseHeldError, StateError
from flux_pipeline.run.lease import (
    acquire_lease,
    hold_lease,
    out_lock_path,
    state_lock_path,
)

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "flux-pipeline run m.yaml --out out/demo"
HOLD = """\
import sys
from pathlib import Path
from flux_pipeline.run.lease import hold_lease
with hold_lease(Path(sys.argv[1]), Path(sys.argv[2]), command=sys.argv[3]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""
TRY = """\
import sys
from pathlib import Path
from flux_pipeline.errors import FluxPipelineError
from flux_pipeline.run.lease import hold_lease
try:
    with hold_lease(Path(sys.argv[1]), Path(sys.argv[2]), command="second"):
        print("acquired")
except FluxPipelineError as exc:
    print(exc)
    sys.exit(exc.exit_code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Holder:
    """A process holding the lease on (state, out) until told to let go, or killed."""

    def __init__(self, state: Path, out: Path, command: str = COMMAND) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(state), str(out), command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert self._line() == "held"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def release(self) -> None:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write("\n")
        stdin.flush()
        assert self._line() == "released"
        assert self.proc.wait() == 0

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        assert self.proc.wait() == -signal.SIGKILL

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


def test_a_second_process_is_refused_naming_the_holder(
    tmp_path: Path, holders: list[Holder]
) -> None:
    out = tmp_path / "out" / "demo"
    state = out / ".flux-pipeline" / "state.sqlite3"
    first = Holder(state, out)
    holders.append(first)

    second = subprocess.run(
        [sys.executable, "-c", TRY, str(state), str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert second.returncode == ExitCode.INVALID
    message = second.stdout.strip()
    assert "\n" not in message
    assert message.startswith(f"{out} is in use by another flux-pipeline run (")
    assert f"pid {first.pid} on host {socket.gethostname()}, since 20" in message
    assert COMMAND in message
    assert message.endswith("): wait for it or stop it")

    with pytest.raises(LeaseHeldError) as caught:  # this process, too
        acquire_lease(state, out, command="third")
    assert isinstance(caught.value, StateError)
    assert caught.value.exit_code == ExitCode.INVALID
    assert caught.value.holder["pid"] == str(first.pid)
    assert caught.value.holder["command"] == COMMAND

    first.release()
    with hold_lease(state, out, command="third") as lease:
        assert lease.held
    assert not lease.held


def test_a_killed_holders_lease_is_taken_over(tmp_path: Path, holders: list[Holder]) -> None:
    out, state = tmp_path / "out", tmp_path / "out" / ".flux-pipeline" / "state.sqlite3"
    first = Holder(state, out)
    holders.append(first)
    first.kill()
    stale = out_lock_path(out).read_text()
    assert f'"pid": {first.pid}' in stale  # the dead holder's words are still there

    with hold_lease(state, out, command="after the crash") as lease:
        for path in (out_lock_path(out), state_lock_path(state)):
            text = path.read_text()
            assert f'"pid": {os.getpid()}' in text
            assert "after the crash" in text
        assert lease.holder.pid == os.getpid()


def test_one_output_directory_with_two_state_dbs_conflicts(
    tmp_path: Path, holders: list[Holder]
) -> None:
    out = tmp_path / "out"
    holders.append(Holder(tmp_path / "a.sqlite3", out))
    with pytest.raises(LeaseHeldError, match=f"^{out} is in use by another"):
        acquire_lease(tmp_path / "elsewhere" / "b.sqlite3", out, command="second")


def test_one_state_db_with_two_output_directories_conflicts(
    tmp_path: Path, holders: list[Holder]
) -> None:
    state = tmp_path / "shared.sqlite3"
    holders.append(Holder(state, tmp_path / "out-a"))
    with pytest.raises(LeaseHeldError, match=f"^state DB {state} is in use by another"):
        acquire_lease(state, tmp_path / "out-b", command="second")
    # the output directory's lock, taken first, was let go again
    with hold_lease(tmp_path / "other.sqlite3", tmp_path / "out-b", command="third"):
        pass


def test_the_same_db_under_another_spelling_conflicts(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with hold_lease(tmp_path / "real" / "s.sqlite3", tmp_path / "a", command="first"):
        with pytest.raises(LeaseHeldError, match="state DB"):
            acquire_lease(tmp_path / "link" / "s.sqlite3", tmp_path / "b", command="second")
        with pytest.raises(LeaseHeldError, match="in use"):
            acquire_lease(Path("a-db"), Path("a"), command="relative")  # cwd is tmp_path


def test_lock_files_have_normal_permissions_and_stay_after_release(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "db" / "s.sqlite3"
    mask = os.umask(0o022)
    try:
        with hold_lease(state, out, command="x"):
            pass
    finally:
        os.umask(mask)
    for path in (out_lock_path(out), state_lock_path(state)):
        assert path.stat().st_mode & 0o777 == 0o644
        assert path.read_bytes() == b""  # released: it names no one
    assert out_lock_path(out) == out / ".flux-pipeline" / "lease"
    assert state_lock_path(state) == tmp_path / "db" / "s.sqlite3.lock"


def test_garbage_in_a_lock_file_is_overwritten(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "s.sqlite3"
    for path in (out_lock_path(out), state_lock_path(state)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xfe not json\n{]" * 1000)
    with hold_lease(state, out, command="x") as lease:
        assert out_lock_path(out).read_text() == lease.holder.line() + "\n"
        assert state_lock_path(state).read_text() == lease.holder.line() + "\n"


def test_a_holder_whose_words_are_unreadable_is_still_refused(tmp_path: Path) -> None:
    out, state = tmp_path / "out", tmp_path / "s.sqlite3"
    with hold_lease(state, out, command="x"):
        out_lock_path(out).write_bytes(b"\x00garbage")
        with pytest.raises(LeaseHeldError, match=r"\(holder not recorded\): wait for it"):
            acquire_lease(state, out, command="y")


def test_a_lock_file_that_cannot_be_created_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a directory")
    with pytest.raises(StateError, match="cannot create the lock file") as caught:
        acquire_lease(tmp_path / "s.sqlite3", blocker / "out", command="x")
    assert not isinstance(caught.value, LeaseHeldError)
    assert str(blocker / "out") in str(caught.value)
    with pytest.raises(StateError, match="cannot create the lock file"):
        acquire_lease(blocker / "s.sqlite3", tmp_path / "out", command="x")
    # the output directory's lock, taken first, was let go again
    with hold_lease(tmp_path / "s.sqlite3", tmp_path / "out", command="x"):
        pass


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StateError, match="does not support locks") as caught:
        acquire_lease(tmp_path / "s.sqlite3", tmp_path / "out", command="x")
    assert "\n" not in str(caught.value)


def _read_only_mounts_work(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(
        [*_READ_ONLY, str(probe), "touch", str(probe / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode != 0 and "Read-only file system" in result.stderr


# Runs a command with DIR bind-mounted read-only, in a private mount namespace (as root,
# chmod does not stop writes; a read-only mount does).
_READ_ONLY = [
    "unshare",
    "--mount",
    "--map-root-user",
    "sh",
    "-c",
    'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
    "sh",
]


def test_a_read_only_directory_is_a_state_error(tmp_path: Path) -> None:
    try:
        usable = _read_only_mounts_work(tmp_path)
    except FileNotFoundError:
        usable = False
    if not usable:
        pytest.skip("cannot mount a read-only directory here (unshare)")
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    # absolute paths: a working directory entered before the mount would still be writable
    args = [str(frozen / "s.sqlite3"), str(frozen / "o")]
    result = subprocess.run(
        [*_READ_ONLY, str(frozen), sys.executable, "-c", TRY, *args],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert result.returncode == ExitCode.INVALID, result.stderr
    assert result.stdout.strip() == (
        f"{frozen}/o/.flux-pipeline/lease: cannot create the lock file: Read-only file system"
    )
    assert list(frozen.iterdir()) == []

    with hold_lease(frozen / "s.sqlite3", frozen / "o", command="before the mount"):
        pass  # the lock files exist now; on a read-only mount they cannot be opened to write
    result = subprocess.run(
        [*_READ_ONLY, str(frozen), sys.executable, "-c", TRY, *args],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert result.returncode == ExitCode.INVALID, result.stderr
    assert result.stdout.strip() == (
        f"{frozen}/o/.flux-pipeline/lease: cannot open the lock file: Read-only file system"
    )


def test_a_refusal_in_the_moment_before_the_holder_stamps_its_line_still_names_it(
    tmp_path: Path,
) -> None:
    """Two runs started together: the second found the lock taken in the instant between the
    first's lock and the line it writes, and said "holder not recorded" (seen in a full
    suite). It reads again briefly, so the refusal names the holder."""
    import threading

    out = tmp_path / "out"
    path = out_lock_path(out)
    path.parent.mkdir(parents=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, nothing written yet
    line = b'{"pid": 4242, "host": "elsewhere", "command": "run m.yaml", "since": "now"}\n'
    stamp = threading.Timer(0.05, os.pwrite, (fd, line, 0))
    stamp.start()
    try:
        with pytest.raises(LeaseHeldError) as caught:
            acquire_lease(tmp_path / "state.sqlite3", out, command="run m.yaml")
    finally:
        stamp.join()
        os.close(fd)
    assert "4242" in str(caught.value), caught.value
    assert "holder not recorded" not in str(caught.value)
