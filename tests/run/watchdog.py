"""The watchdog of the no-hang tests: a ``flux-pipeline`` subprocess must exit by itself.

``bounded`` runs a command and kills it if it is still running after ``WATCHDOG`` seconds
(interpreter start included: a few seconds on a loaded machine); a kill fails the test with
the output so far. A command that prints its error and then waits on a thread that was never
closed (the failure these tests guard against) is caught here, not by the CI job's timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .support import clean_env

WATCHDOG = 30.0  # seconds a refused command may take, interpreter start included
ROOT = Path(__file__).resolve().parents[2]


def env_with(**extra: str) -> dict[str, str]:
    env = clean_env(**extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class Ended:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return (self.stdout + self.stderr).strip().splitlines()

    def errors(self) -> list[str]:
        """The lines that are not the simulator's start notice."""
        return [line for line in self.lines if "simulating the API at" not in line]


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flux_pipeline", *args]


def bounded(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    within: float = WATCHDOG,
    preexec_fn: Callable[[], None] | None = None,
    cwd: Path | None = None,
) -> Ended:
    """Run ``argv`` to its end; fail if it is still running after ``within`` seconds."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env or env_with(),
            timeout=within,
            check=False,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec_fn,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise AssertionError(
            f"{argv[3:]} still running after {within:g}s (killed); output: {out}{err}"
        ) from None
    return Ended(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
