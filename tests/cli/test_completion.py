"""Shell completion is click's: ``_FLUX_PIPELINE_COMPLETE=bash_source flux-pipeline`` prints
the script (docs/cli.md), and the completer knows the commands and options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..run.support import clean_env


def _complete(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline"],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _flux_pipeline_completion flux-pipeline"),
        ("zsh", "#compdef flux-pipeline"),
        ("fish", "complete --no-files --command flux-pipeline"),
    ],
)
def test_the_completion_script_is_produced(shell: str, marker: str) -> None:
    done = _complete(_FLUX_PIPELINE_COMPLETE=f"{shell}_source")
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout
    assert "_FLUX_PIPELINE_COMPLETE" in done.stdout


def test_the_completer_offers_commands_and_options() -> None:
    commands = _complete(
        _FLUX_PIPELINE_COMPLETE="bash_complete", COMP_WORDS="flux-pipeline in", COMP_CWORD="1"
    )
    assert commands.returncode == 0, commands.stderr
    assert "plain,init" in commands.stdout.splitlines()
    options = _complete(
        _FLUX_PIPELINE_COMPLETE="bash_complete",
        COMP_WORDS="flux-pipeline run --js",
        COMP_CWORD="2",
    )
    assert options.stdout.splitlines() == ["plain,--json"]
