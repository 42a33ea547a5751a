"""``flux-pipeline init``: a starter that validates, runs on ``--simulate`` and keeps what is
there; ``schema --output`` writes the schema its modeline points at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.cli.init_cmd import DATA, MANIFEST, SCHEMA
from flux_pipeline.manifest.schema import schema_text

from ..run.support import clean_env

MODELINE = "# yaml-language-server: $schema="


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline", *argv],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_the_starter_validates_and_runs_clean_on_simulate(tmp_path: Path) -> None:
    project = tmp_path / "My Project"
    made = _cli("init", str(project), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert {Path(line).name for line in made.stdout.splitlines()} == {
        MANIFEST,
        DATA,
        "manifest.schema.json",
        ".gitignore",
    }
    checked = _cli("validate", "--json", MANIFEST, cwd=project)
    assert checked.returncode == 0, checked.stderr
    document = json.loads(checked.stdout)
    assert document["ok"] is True
    assert document["manifests"][0]["name"] == "my-project"
    assert document["manifests"][0]["tasks"] == 6
    ran = _cli("run", MANIFEST, "--simulate", "--sim-task-seconds", "0.05", "--json", cwd=project)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["exit_code"] == 0
    assert summary["buckets"]["done"] == 6
    assert summary["created"] == 6
    assert len(list((project / "out" / "my-project").rglob("*.png"))) == 6


def test_the_modeline_points_at_the_schema_written_beside_the_manifest(tmp_path: Path) -> None:
    assert run_cli(["init", str(tmp_path)]) == 0
    first = (tmp_path / MANIFEST).read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(MODELINE)
    target = first.removeprefix(MODELINE)
    assert not Path(target).is_absolute()
    assert ".." not in Path(target).parts
    assert target == SCHEMA
    assert (tmp_path / target).read_text(encoding="utf-8") == schema_text()


def test_the_starter_conforms_to_the_schema_it_ships(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    assert run_cli(["init", str(tmp_path)]) == 0
    schema = json.loads((tmp_path / SCHEMA).read_text(encoding="utf-8"))
    document = yaml.safe_load((tmp_path / MANIFEST).read_text(encoding="utf-8"))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(document)) == []


def test_an_existing_manifest_is_kept_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / MANIFEST
    manifest.write_text("mine\n", encoding="utf-8")
    assert run_cli(["init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "exists already" in err
    assert "--force" in err
    assert manifest.read_text(encoding="utf-8") == "mine\n"
    assert not (tmp_path / DATA).exists()
    assert not (tmp_path / ".gitignore").exists()
    assert run_cli(["init", "--force", str(tmp_path)]) == 0
    assert manifest.read_text(encoding="utf-8").startswith(MODELINE)


def test_an_existing_data_file_is_kept_unless_forced(tmp_path: Path) -> None:
    (tmp_path / DATA).write_text("look\nmine\n", encoding="utf-8")
    assert run_cli(["init", str(tmp_path)]) == 2
    assert (tmp_path / DATA).read_text(encoding="utf-8") == "look\nmine\n"
    assert not (tmp_path / MANIFEST).exists()


def test_gitignore_is_appended_once(tmp_path: Path) -> None:
    ignore = tmp_path / ".gitignore"
    ignore.write_text("*.log\nnode_modules/", encoding="utf-8")  # no final newline
    assert run_cli(["init", str(tmp_path)]) == 0
    assert ignore.read_text(encoding="utf-8") == "*.log\nnode_modules/\n/out/\n"
    assert run_cli(["init", "--force", str(tmp_path)]) == 0
    assert ignore.read_text(encoding="utf-8") == "*.log\nnode_modules/\n/out/\n"


def test_an_equivalent_ignore_line_is_not_duplicated(tmp_path: Path) -> None:
    ignore = tmp_path / ".gitignore"
    ignore.write_text("out/\n", encoding="utf-8")
    assert run_cli(["init", str(tmp_path)]) == 0
    assert ignore.read_text(encoding="utf-8") == "out/\n"


def test_init_defaults_to_the_current_directory_and_takes_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(["init", "--name", "spring_2027"]) == 0
    assert "name: spring_2027\n" in (tmp_path / MANIFEST).read_text(encoding="utf-8")
    assert run_cli(["init", "--force", "--name", "Bad Name"]) == 2


def test_a_non_latin_directory_name_is_transliterated(tmp_path: Path) -> None:
    project = tmp_path / "Καφές"
    assert run_cli(["init", str(project)]) == 0
    assert "name: kafes\n" in (project / MANIFEST).read_text(encoding="utf-8")


def test_schema_output_writes_the_schema_to_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "deep" / "er" / "flux-pipeline.schema.json"
    assert run_cli(["schema", "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text(encoding="utf-8") == schema_text()
    assert json.loads(target.read_text(encoding="utf-8"))["$schema"].startswith("https://")
