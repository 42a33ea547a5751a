from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.manifest.schema import PUBLISHED, schema_text

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"


def test_every_example_validates_and_plans(capsys: pytest.CaptureFixture[str]) -> None:
    manifests = sorted(PIPELINES.glob("*.yaml"))
    assert manifests
    assert run_cli(["validate", *map(str, manifests)]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok (") == len(manifests)
    for manifest in manifests:
        assert run_cli(["plan", str(manifest)]) == 0
        assert "new" in capsys.readouterr().out


def test_plan_json_of_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["plan", "--json", str(PIPELINES / "demo.yaml")]) == 0
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
