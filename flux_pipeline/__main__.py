"""The process's entry (``python -m flux_pipeline`` and the ``flux-pipeline`` command).

A SIGTERM or SIGHUP that arrives while the command line's modules are still being imported
(a CI job cancelled at once, docs/exit-codes.md) is taken as SIGINT is: ``interrupted``,
exit 3, nothing opened, rather than the interpreter's silent default death; so is one before a
command installs its own handling (``run``: flux_pipeline/run/stops.py; the review server and
the simulator: uvicorn's)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

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
        from flux_pipeline.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("flux-pipeline: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    cli_main()  # the handler stays until a command installs its own: its lazy imports too


if __name__ == "__main__":
    main()
