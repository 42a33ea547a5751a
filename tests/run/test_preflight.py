"""Check before paying: an output or state directory that cannot be written, or a full disk,
is an error before anything is sent.

Tests run as root, where chmod does not stop writes: a genuinely read-only directory is a
read-only bind mount in a private mount namespace (``unshare``; skipped where that is not
allowed). Paths through a regular file, a fake ``fsync`` failure and a free-space minimum
larger than the disk cover the other ways to fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flux_pipeline.errors import ExitCode, OutputsNotWritableError, UsageError
from flux_pipeline.layout import default_state_path
from flux_pipeline.run.preflight import MIN_FREE_BYTES, check_writable

ROOT = Path(__file__).resolve().parents[2]
CHECK = """\
import sys
from pathlib import Path
from flux_pipeline.errors import FluxPipelineError
from flux_pipeline.run.preflight import check_writable
try:
    check_writable(Path(sys.argv[1]), Path(sys.argv[2]))
except FluxPipelineError as exc:
    print(exc)
    sys.exit(exc.exit_code)
print("writable")
"""
# Runs a command with DIR bind-mounted read-only, in a private mount namespace.
READ_ONLY = [
    "unshare",
    "--mount",
    "--map-root-user",
    "sh",
    "-c",
    'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"',
    "sh",
]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def check_read_only(frozen: Path, out: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """``check_writable(out, state)`` in a process that sees ``frozen`` read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here: cannot mount a read-only directory")
    probe = subprocess.run(
        [*READ_ONLY, str(frozen), "touch", str(frozen / "x")],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount a read-only directory here: {probe.stderr.strip()}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [*READ_ONLY, str(frozen), sys.executable, "-c", CHECK, str(out), str(state)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_a_writable_place_passes_and_keeps_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out" / "demo"
    check_writable(out, default_state_path(out))
    assert out.is_dir()
    assert (out / ".flux-pipeline").is_dir()
    assert files_under(tmp_path) == []

    elsewhere = tmp_path / "states" / "s.sqlite3"
    check_writable(out, elsewhere)
    assert elsewhere.parent.is_dir()
    assert files_under(tmp_path) == []


def test_an_existing_state_db_is_left_as_it_is(tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    state.write_bytes(b"db")
    check_writable(tmp_path / "out", state)
    assert state.read_bytes() == b"db"
    assert files_under(tmp_path) == [state]


def _refused(out: Path, state: Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    with pytest.raises(OutputsNotWritableError) as caught:
        check_writable(out, state, min_free_bytes=min_free_bytes)
    assert isinstance(caught.value, UsageError)
    assert caught.value.exit_code == ExitCode.INVALID
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_output_directory_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    assert _refused(out, tmp_path / "s.sqlite3") == (
        f"output directory {out}: cannot create it: a part of the path is a file, not a directory"
    )


def test_an_output_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("a file where the outputs should go")
    assert _refused(out, tmp_path / "s.sqlite3") == (
        f"output directory {out}: cannot create it: exists and is not a directory"
    )


def test_a_state_db_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    message = _refused(tmp_path / "out", blocker / "db" / "s.sqlite3")
    assert message.startswith(f"state DB directory {blocker / 'db'}: cannot create it: ")


def test_a_state_db_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    state.mkdir()
    assert _refused(tmp_path / "out", state) == (f"state DB {state}: is a directory, not a file")


def test_a_full_disk_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    more_than_the_disk = shutil.disk_usage(tmp_path).total + 1
    message = _refused(out, default_state_path(out), min_free_bytes=more_than_the_disk)
    assert message.startswith(f"output directory {out}: only ")
    assert "free on its file system; a run needs at least " in message
    assert files_under(tmp_path) == []


def test_a_failing_fsync_is_refused_and_cleaned_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    out = tmp_path / "out"
    assert _refused(out, tmp_path / "s.sqlite3") == (
        f"output directory {out}: cannot write files there: No space left on device"
    )
    assert files_under(tmp_path) == []


def test_a_read_only_output_directory_is_refused(tmp_path: Path) -> None:
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    result = check_read_only(frozen, frozen, tmp_path / "state" / "s.sqlite3")
    assert result.returncode == ExitCode.INVALID, result.stderr
    assert result.stdout.strip() == (
        f"output directory {frozen}: cannot write files there: Read-only file system"
    )
    assert list(frozen.iterdir()) == []


def test_an_output_directory_to_create_on_a_read_only_mount_is_refused(
    tmp_path: Path,
) -> None:
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    out = frozen / "out" / "demo"
    result = check_read_only(frozen, out, default_state_path(out))
    assert result.returncode == ExitCode.INVALID, result.stderr
    assert result.stdout.strip() == (
        f"output directory {out}: cannot create it: Read-only file system"
    )
    assert list(frozen.iterdir()) == []


def test_a_read_only_state_directory_is_refused(tmp_path: Path) -> None:
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    out = tmp_path / "out"
    result = check_read_only(frozen, out, frozen / "s.sqlite3")
    assert result.returncode == ExitCode.INVALID, result.stderr
    assert result.stdout.strip() == (
        f"state DB directory {frozen}: cannot write files there: Read-only file system"
    )
    assert files_under(out) == []
