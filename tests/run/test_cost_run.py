"""The cost before the run: ``plan`` and ``run`` with and without a ``pricing`` section, and
``run --max-cost``, end to end against the simulator over HTTP."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.simulator import SimConfig, SimulatorThread
from tests.run.support import SimAdmin, cli, quick_sim, sim_tasks, spawn_run, write_manifest

KEY = "sim-cost-test-key"
RUNS = itertools.count()
PRICED = """\
version: 1
name: priced
pricing: {currency: USD, per_task: {pro: 0.04, max: 0.08}}
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
steps:
  - id: gen
    matrix:
      n: [a, b, c]
    prompt: "picture {{ n }}"
  - id: big
    from: gen
    prompt: "edit of {{ parent.n }}"
    input: {mode: max}
"""
UNPRICED = PRICED.replace("pricing: {currency: USD, per_task: {pro: 0.04, max: 0.08}}\n", "")


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with quick_sim(KEY) as thread:
        yield thread


def run(sim: SimulatorThread, tmp_path: Path, *extra: str) -> tuple[int, str, dict[str, Any]]:
    proc = spawn_run(
        tmp_path / "manifest.yaml",
        tmp_path / "out",
        "--no-lock",
        "--json",
        *extra,
        base_url=sim.base_url,
        api_key=KEY,
        logs=tmp_path / "logs",
        tag=f"run{next(RUNS)}",
    )
    code = proc.proc.wait(timeout=120)
    text = proc.output()
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    return code, text, json.loads(lines[0]) if lines else {}


def test_plan_and_run_show_the_cost(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, PRICED)
    out = str(tmp_path / "out")
    code, text = cli("plan", str(manifest), "--no-lock", "--out", out)
    assert code == 0
    assert "would create 6 task(s) (max 3, pro 3): 0.36 USD" in text
    code, text = cli("plan", str(manifest), "--no-lock", "--out", out, "--json")
    cost = json.loads(text)["cost"]
    assert cost == {"tasks": 6, "by_mode": {"max": 3, "pro": 3}, "currency": "USD", "total": 0.36}
    code, text, summary = run(sim, tmp_path, "--limit", "4")
    assert code == 0, text
    assert "this run would create 4 task(s) (max 1, pro 3): 0.2 USD" in text
    assert "created 4 task(s) (max 1, pro 3): 0.2 USD" in text
    assert summary["cost"] == {
        "tasks": 4,
        "by_mode": {"max": 1, "pro": 3},
        "currency": "USD",
        "total": 0.2,
    }
    # the done ones are not counted again
    code, text = cli("plan", str(manifest), "--no-lock", "--out", out)
    assert "would create 2 task(s) (max 2): 0.16 USD" in text


def test_max_cost_stops_before_the_cap(sim: SimulatorThread, tmp_path: Path) -> None:
    write_manifest(tmp_path, PRICED)
    code, text, summary = run(sim, tmp_path, "--max-cost", "0.1")
    assert code == 3, text
    assert summary["created"] == 2
    assert len(sim_tasks(sim)) == 2
    assert "--max-cost 0.1 USD reached: 0.08 USD created so far, the next task" in text, text
    # a higher cap goes on from there; nothing is created twice
    code, text, summary = run(sim, tmp_path, "--max-cost", "1")
    assert code == 0, text
    assert summary["created"] == 4
    assert len(sim_tasks(sim)) == 6


def test_without_pricing_counts_per_mode(sim: SimulatorThread, tmp_path: Path) -> None:
    write_manifest(tmp_path, UNPRICED)
    code, text, summary = run(sim, tmp_path)
    assert code == 0, text
    assert "this run would create 6 task(s) (max 3, pro 3; no pricing in the manifest)" in text
    assert summary["cost"]["total"] is None
    code, text, _ = run(sim, tmp_path, "--max-cost", "1")
    assert code == 2
    assert "--max-cost needs a pricing section in the manifest" in text


@pytest.mark.parametrize(
    "pricing",
    [
        "{per_task: {pro: -1}}",
        "{per_task: {turbo: 1}}",
        "{currency: USD}",
        "{per_task: {pro: .nan}}",
    ],
)
def test_a_bad_pricing_section_is_refused(tmp_path: Path, pricing: str) -> None:
    manifest = write_manifest(
        tmp_path, PRICED.replace("{currency: USD, per_task: {pro: 0.04, max: 0.08}}", pricing)
    )
    code, _ = cli("validate", str(manifest))
    assert code == 2


def test_the_simulators_credits_price_a_manifest(tmp_path: Path) -> None:
    """SimConfig.per_task has the shape of pricing.per_task: priced with it, the run's cost
    is the simulator's credits spent."""
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, task_spread=0.0, credits=1000.0)
    prices = json.dumps(config.per_task)
    write_manifest(
        tmp_path,
        PRICED.replace(
            "{currency: USD, per_task: {pro: 0.04, max: 0.08}}", f"{{per_task: {prices}}}"
        ),
    )
    with SimulatorThread(config) as sim:
        code, text, summary = run(sim, tmp_path)
        spent = SimAdmin(sim.base_url).stats()["credits_spent"]
    assert code == 0, text
    assert summary["cost"]["currency"] == "credits"
    assert summary["cost"]["total"] == spent == 3 * config.cost_pro + 3 * config.cost_max
