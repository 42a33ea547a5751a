"""``plan --shard`` and ``plan --format gha-matrix`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.cli import run_cli
from tests.plan.test_shard_partition import CHAINED


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert run_cli(["plan", *args]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_plan_shards_partition_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    whole = plan_json(capsys, str(manifest), "--json")["tasks"]
    parts = [
        plan_json(capsys, str(manifest), "--format", "json", "--shard", f"{i}/3")["tasks"]
        for i in (1, 2, 3)
    ]
    keys = [t["key"] for part in parts for t in part]
    assert len(keys) == len(set(keys)) == len(whole)
    assert set(keys) == {t["key"] for t in whole}
    for part in parts:
        own = {t["key"] for t in part}
        assert all(t["parent"] is None or t["parent"] in own for t in part)


def test_plan_gha_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    matrix = plan_json(capsys, str(manifest), "--format", "gha-matrix", "--max-shards", "3")
    assert matrix == {"include": [{"shard": f"{i}/3", "label": f"{i}of3"} for i in (1, 2, 3)]}


def test_plan_rejects_a_bad_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    assert run_cli(["plan", str(manifest), "--shard", "0/3"]) == 2
    assert "the shard index must be within 1..3" in capsys.readouterr().err
