"""Output paths that could never be written, or would be written outside the output
directory, are errors before anything is paid for: at validate time (names over the file-system
limits, a file that is another output's directory) or in the run's preflight (a link in the
output directory leading elsewhere, ``--out`` under a file); exit 2, one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli

from ..manifest.helpers import cli_limited


def write(directory: Path, output: str, *, repeat: int = 1) -> Path:
    path = directory / "m.yaml"
    path.write_text(
        "version: 1\nname: t\nsteps:\n  - id: s\n"
        f"    repeat: {repeat}\n    prompt: 'p {{{{ repeat_index }}}}'\n    output: \"{output}\"\n"
    )
    return path


def test_a_link_in_the_output_directory_stops_the_run_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out" / "t").mkdir(parents=True)
    (tmp_path / "out" / "t" / "sym").symlink_to(elsewhere)
    write(tmp_path, "{{ 'sym/evil' if repeat_index == 1 else 'fine' }}", repeat=2)
    done = cli_limited(tmp_path, "run", "--simulate", "m.yaml", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        "flux-pipeline: error: output directory out/t: output path 'sym/evil.jpg' leads "
        "outside it through the link sym: remove the link (nothing was sent)"
    ]
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "out" / "t" / ".flux-pipeline" / "state.sqlite3").exists()
    assert not (tmp_path / "out" / "t" / "fine.jpg").exists()


def test_an_output_directory_under_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write(tmp_path, "x")
    done = cli_limited(tmp_path, "run", "--simulate", "--out", "/etc/passwd/x", "m.yaml")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "flux-pipeline: error: output directory /etc/passwd/x: cannot create it: a part of "
        "the path is a file, not a directory"
    )


def test_a_file_name_over_the_file_system_limit_is_a_validation_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "dir/" + "x" * 300)
    assert run_cli(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7:13: steps[0].output: output path 'dir/xxx" in err
    assert "has a file name longer than 200 bytes" in err
    path = write(tmp_path, "d" * 256 + "/x")
    assert run_cli(["validate", str(path)]) == 2
    assert "has a directory name longer than 255 bytes" in capsys.readouterr().err
    path = write(tmp_path, "é" * 101)  # 202 bytes in UTF-8
    assert run_cli(["validate", str(path)]) == 2
    assert "has a file name longer than 200 bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("first", "second"),
    [("a", "a.jpg/b"), ("a.jpg/b", "a"), ("A", "a.JPG/b"), ("a", "a-2.jpg/b")],
)
def test_an_output_file_that_is_another_outputs_directory_is_a_validation_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first: str, second: str
) -> None:
    path = write(tmp_path, f"{{{{ '{first}' if repeat_index == 1 else '{second}' }}}}", repeat=2)
    assert run_cli(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7:13: steps[0].output: output path " in err
    assert "s#1" in err
    assert "s#2" in err
    assert "directory" in err


def test_nested_outputs_that_do_not_clash_are_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "{{ 'a' if repeat_index == 1 else 'a/b' }}", repeat=2)
    assert run_cli(["validate", str(path)]) == 0
