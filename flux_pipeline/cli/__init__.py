"""The command line: a thin shell with one error boundary.

Every command returns an exit code, an ``errors.ExitCode`` (docs/exit-codes.md): 0 done, 1 some
tasks have no images, 2 invalid usage/manifest/configuration/key, 3 stopped early but resumable,
70 a bug. Errors from the library arrive
as ``FluxPipelineError`` and are printed as one line each; nothing else prints a traceback
unless ``FLUX_PIPELINE_DEBUG=1``. Standard output and error are redacted last
(``redact.RedactingStream``): the API key and callback secret never print (docs/secrets.md).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from collections.abc import Iterator, Sequence

import click

import flux_pipeline
from flux_pipeline import __version__, redact
from flux_pipeline.errors import ExitCode, FluxPipelineError, ManifestError

# command name -> the module that defines it: a command's module (and what it imports: the
# engine, httpx, the simulator...) is imported only when that command runs, so that
# ``validate`` or ``--help`` do not pay for ``run`` (docs/architecture.md)
_COMMANDS = {
    "diff": "flux_pipeline.cli.review_cmds",
    "init": "flux_pipeline.cli.init_cmd",
    "merge": "flux_pipeline.cli.review_cmds",
    "plan": "flux_pipeline.cli.manifest_cmds",
    "report": "flux_pipeline.cli.state_cmds",
    "review": "flux_pipeline.cli.review_cmd",
    "run": "flux_pipeline.cli.run_cmd",
    "schema": "flux_pipeline.cli.manifest_cmds",
    "sim": "flux_pipeline.simulator.cli",
    "status": "flux_pipeline.cli.state_cmds",
    "validate": "flux_pipeline.cli.manifest_cmds",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented lazy group)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = _COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = getattr(importlib.import_module(module), cmd_name)
        if not isinstance(command, click.Command):  # pragma: no cover - a wiring mistake
            raise TypeError(f"{module}.{cmd_name} is not a click command")
        if flux_pipeline.early_interrupt:  # its interrupt swallowed on the way (an exception
            raise KeyboardInterrupt  # in a callback is "ignored"): nothing is started
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flux-pipeline")
def cli() -> None:
    """Run Flux Kontext image pipelines declared in YAML manifests."""


def _one_line(text: str) -> str:
    """An error's text as one printed line: control characters (a newline an API put in a
    message could forge a log line) escaped, at most 2,000 characters."""
    from flux_pipeline.run.caps import one_line

    return one_line(text, 2000)


def _err(line: str) -> None:
    click.echo(line, err=True)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group carried: ours first, else the first leaf."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    ours = [e for e in leaves if isinstance(e, FluxPipelineError | KeyboardInterrupt)]
    return (ours or leaves or [group])[0]


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Invoke the CLI and map every outcome to an exit code (used by flux_pipeline/__main__.py
    and tests). Whatever it prints is redacted of every secret known (the key in the
    environment, and what a run registers)."""
    with redact.scope(), _redacted_output():
        redact.register(*redact.environment_secrets(os.environ))
        return _run_cli(argv)


@contextlib.contextmanager
def _redacted_output() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = redact.RedactingStream(sys.stdout)
    sys.stderr = redact.RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _run_cli(argv: Sequence[str] | None) -> int:
    try:
        try:
            result = cli.main(args=argv, prog_name="flux-pipeline", standalone_mode=False)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from group
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return ExitCode.INVALID
    except click.exceptions.Abort:
        _err("flux-pipeline: interrupted")
        return ExitCode.RESUMABLE
    except ManifestError as exc:
        for diagnostic in exc.diagnostics:
            _err(str(diagnostic))
        _err(f"flux-pipeline: {len(exc.diagnostics)} error(s) in manifest")
        return exc.exit_code
    except FluxPipelineError as exc:
        _err(f"flux-pipeline: error: {_one_line(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("flux-pipeline: interrupted")
        return ExitCode.RESUMABLE
    except Exception as exc:
        if flux_pipeline.early_interrupt:  # the interrupt, turned into another error on its way
            _err("flux-pipeline: interrupted")
            return ExitCode.RESUMABLE
        if os.environ.get("FLUX_PIPELINE_DEBUG") == "1":
            traceback.print_exc()
        first = _one_line(str(exc).splitlines()[0]) if str(exc) else ""
        _err(
            f"flux-pipeline: internal error: {type(exc).__name__}: {first} "
            "(set FLUX_PIPELINE_DEBUG=1 for a traceback)"
        )
        return ExitCode.INTERNAL
    if flux_pipeline.early_interrupt:  # the command ran on, its interrupt swallowed in a library
        _err("flux-pipeline: interrupted")
        return ExitCode.RESUMABLE
    return result if isinstance(result, int) else ExitCode.OK
