from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.manifest.schema import PUBLISHED, schema_text

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"


def test_every_example_validates_and_plans(
    shipped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifests = sorted(shipped.glob("*.yaml"))
    assert manifests
    assert run_cli(["validate", *map(str, manifests)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == len(manifests)
    for manifest in manifests:
        assert run_cli(["plan", str(manifest)]) == 0
        assert "new" in capsys.readouterr().out


def test_plan_json_of_the_demo(shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["plan", "--json", str(shipped / "demo.yaml")]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["manifest"] == "demo"
    assert document["steps"] == {"hero": 4, "banner": 4}
    assert document["counts"] == {"new": 4, "waiting for parent": 4}
    first = document["tasks"][0]
    assert first["readable_id"] == "hero@product=lamp,style=watercolor#1"
    assert first["output"] == "hero/product-lamp-style-watercolor-1.png"
    assert first["request"]["input"]["prompt"].startswith("A watercolor of the Acme lamp")
    banner = document["tasks"][4]
    assert banner["parent"] == first["key"]
    assert banner["readable_id"] == "hero@product=lamp,style=watercolor#1/banner#1"
    assert (banner["reason"], banner["action"]) == ("waiting for parent", "wait")


def test_schema_command_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["schema"]) == 0
    printed = capsys.readouterr().out
    assert printed == schema_text()
    assert PUBLISHED.read_text(encoding="utf-8") == printed, (
        "regenerate: flux-pipeline schema > flux_pipeline/manifest.schema.json"
    )


def test_examples_carry_the_schema_modeline() -> None:
    for manifest in PIPELINES.glob("*.yaml"):
        first = manifest.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../flux_pipeline/manifest.schema.json"


def test_examples_and_defaults_conform_to_the_published_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for manifest in PIPELINES.glob("*.yaml"):
        document = yaml.safe_load(manifest.read_text(encoding="utf-8"))
        assert list(validator.iter_errors(document)) == [], manifest
    broken = {"version": 1, "name": "x", "steps": [{"id": "s", "promt": "p"}]}
    assert list(validator.iter_errors(broken))


@pytest.mark.parametrize("command", ["run", "plan", "status", "report", "merge"])
def test_out_and_state_mean_the_same_in_every_command(command: str) -> None:
    import click

    from flux_pipeline.cli import cli

    ctx = click.Context(cli)
    found = cli.get_command(ctx, command)
    assert found is not None
    options = {p.name: p for p in found.params if isinstance(p, click.Option)}
    out, state = options["out_dir"], options["state_path"]
    assert (out.opts, state.opts) == (["--out"], ["--state"])
    assert (out.default, state.default) == (None, None)
    assert isinstance(out.type, click.Path)
    assert isinstance(state.type, click.Path)
    assert (out.type.file_okay, out.type.dir_okay) == (False, True)
    assert (state.type.file_okay, state.type.dir_okay) == (True, False)
    assert "[default: out/<manifest name>]" in (out.help or "")
    assert "[default: <out>/.flux-pipeline/state" in (state.help or "")


def test_usage_errors_exit_with_exit_code_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    from flux_pipeline.errors import ExitCode

    code = run_cli(["plan", "--no-such-option", "x.yaml"])
    assert code == 2
    assert code == ExitCode.INVALID
    assert "no such option" in capsys.readouterr().err.lower()
    assert run_cli(["status", "--out", "/nonexistent/out"]) == ExitCode.INVALID
    assert "no state DB at" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "m.yaml", "--simulate", "--rpm", "nan"],
        ["run", "m.yaml", "--simulate", "--rpm", "inf"],
        ["run", "m.yaml", "--simulate", "--sim-task-seconds", "nan"],
        ["run", "m.yaml", "--simulate", "--sim-task-seconds", "inf"],
        ["sim", "--task-seconds", "nan"],
        ["sim", "--error-rate", "nan"],
        ["sim", "--slow-seconds", "inf"],
    ],
    ids=lambda argv: "-".join(argv[-2:]),
)
def test_non_finite_numbers_are_usage_errors(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NaN passes every range comparison: ``--rpm nan`` used to run with no request budget.
    Refused at parse time (exit 2, one line naming the option), before anything starts."""
    (tmp_path / "m.yaml").write_text('version: 1\nname: m\nsteps:\n  - {id: a, prompt: "x"}\n')
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "is not a finite number" in err
    assert f"'{argv[-2]}'" in err
    assert not (tmp_path / "out").exists()
