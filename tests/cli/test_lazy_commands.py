"""The command line imports a command's module only when that command runs
(flux_pipeline/cli/__init__.py): every command is listed, each name maps to its module, and a
``validate`` or ``plan`` never loads the engine, the HTTP client or the simulator."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import click

from flux_pipeline.cli import _COMMANDS, cli

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted(set(_COMMANDS.values()))


def test_the_map_names_every_command_each_module_defines() -> None:
    defined: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        commands = getattr(module, "COMMANDS", None) or [module.sim]
        for command in commands:
            assert isinstance(command, click.Command)
            assert command.name is not None
            defined[command.name] = name
    assert defined == _COMMANDS
    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(defined)
    assert cli.get_command(ctx, "nope") is None


def _loaded_after(*argv: str) -> set[str]:
    code = (
        "import sys\n"
        "from flux_pipeline.cli import run_cli\n"
        f"code = run_cli({list(argv)!r})\n"
        "print(' '.join(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.splitlines()[-1].split())  # the modules line is the last


def test_validate_and_plan_load_neither_the_engine_nor_the_simulator() -> None:
    for argv in (("validate", "pipelines/demo.yaml"), ("run", "--help")):
        loaded = _loaded_after(*argv)
        assert "flux_pipeline.cli.init_cmd" not in loaded, argv
        assert "flux_pipeline.simulator.app" not in loaded, argv
        assert "flux_pipeline.cli.review_server" not in loaded, argv
    assert "flux_pipeline.run.engine" not in _loaded_after("validate", "pipelines/demo.yaml")
