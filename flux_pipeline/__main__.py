"""The process's entry (``python -m flux_pipeline`` and the ``flux-pipeline`` command).

A SIGTERM or SIGHUP that arrives while the command line's modules are still being imported
(a CI job cancelled at once, docs/exit-codes.md) is taken as SIGINT is: ``interrupted``,
exit 3, nothing opened, rather than the interpreter's silent default death; so is one before a
command installs its own handling (``run``: flux_pipeline/run/stops.py; the review server and
the simulator: uvicorn's)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

import flux_pipeline  # the package, imported already: nothing more loads

INTERRUPTED = 3  # errors.ExitCode.RESUMABLE, not imported: this runs before any import


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    flux_pipeline.early_interrupt = True
    raise KeyboardInterrupt


def main() -> None:
    early = (signal.SIGTERM, signal.SIGHUP)
    for signum in early:
        signal.signal(signum, _as_interrupt)
    try:
        from flux_pipeline.cli import run_cli
    except KeyboardInterrupt:
        sys.stderr.write("flux-pipeline: interrupted\n")
        _exit(INTERRUPTED)
    _exit(run_cli())  # the handler stays until a command installs its own: its lazy imports too


def _exit(code: int) -> NoReturn:
    """Exit with ``code``. After an early interrupt, without the interpreter's finalisation:
    an interrupt raised while ``exec`` ran a string (dataclasses and namedtuple define their
    methods so, while modules are imported) leaves the interpreter's mark of an unhandled
    one even once it is handled, and the interpreter then ends the process by SIGINT
    (status -2) instead of ``code``. Nothing is open then that finalisation would close."""
    if flux_pipeline.early_interrupt:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
