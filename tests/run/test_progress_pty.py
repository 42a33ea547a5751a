"""The progress display on a terminal (run/progress.py), through a real pty: every message
the run prints while the bar is live is a line of its own (above the bar), never glued to
the bar (``0/?  0:00:00flux-pipeline: simulating...``), and a run refused before its engine
starts (a mistyped manifest path) shows no bar at all.

The pty's bytes are replayed on a tiny screen model (carriage return, newline, erase line,
cursor up; other escape sequences dropped) to get the lines a person would see.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .support import roots_manifest, write_manifest
from .watchdog import WATCHDOG, env_with

BAR = "\u2501"  # rich's bar character
_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(raw: bytes) -> list[str]:
    """The lines a terminal shows after ``raw``."""
    text = raw.decode(errors="replace")
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(text):
        match = _ESCAPE.match(text, i)
        if match:
            args, command = match.groups()
            if command == "K":
                lines[row] = lines[row][:col] if args in ("", "0") else [" "] * col
            elif command == "A":
                row = max(0, row - int(args or 1))
            i = match.end()
            continue
        char = text[i]
        i += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append([])
        else:
            line = lines[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
    return ["".join(line).rstrip() for line in lines if "".join(line).strip()]


def in_pty(argv: list[str], *, interrupt_when: bytes | None = None) -> tuple[int, bytes]:
    """Run ``argv`` with a pty as its terminal; SIGINT once ``interrupt_when`` was shown."""
    master, slave = pty.openpty()
    env = env_with(COLUMNS="120", TERM="xterm")
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    raw = b""
    sent = False
    deadline = time.monotonic() + WATCHDOG * 2
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                raw += chunk
            if interrupt_when is not None and not sent and interrupt_when in raw:
                proc.send_signal(signal.SIGINT)
                sent = True
            if not ready and proc.poll() is not None:
                break
        code = proc.wait(timeout=WATCHDOG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, raw


def test_a_mistyped_manifest_shows_no_bar(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "flux_pipeline", "run", str(tmp_path / "nothere.yaml")]
    code, raw = in_pty([*argv, "--simulate"])
    lines = screen(raw)
    assert code == 2, lines
    assert not any(BAR in line for line in lines), lines
    assert b"\x1b[?25l" not in raw  # the cursor was never hidden for a bar
    assert lines[-1] == "flux-pipeline: 1 error(s) in manifest", lines


def test_messages_print_above_the_bar_never_glued_to_it(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("pty", 4))
    argv = [sys.executable, "-m", "flux_pipeline", "run", str(manifest), "--out", "out"]
    code, raw = in_pty(
        [*argv, "--simulate", "--sim-task-seconds", "5"], interrupt_when=b"in flight 4"
    )
    lines = screen(raw)
    assert code == 3, lines
    messages = [line for line in lines if "flux-pipeline:" in line]
    assert all(line.startswith("flux-pipeline:") for line in messages), lines
    assert not any(BAR in line for line in messages), lines
    assert any(line.startswith("flux-pipeline: simulating the API at") for line in lines)
    assert any(line.startswith("flux-pipeline: SIGINT received") for line in lines), lines
    assert any(BAR in line for line in lines), lines  # the bar was shown
