"""Shards stay inside one API key's limits: ``--max-active`` and ``--rpm`` are the key's, and
each of the N shards of ``--shard I/N`` takes 1/N of them (cli/options.py ``shard_limits``).

The acceptance run: three shard subprocesses at once, each given ``--rpm 600`` (the key's
limit), against ONE simulator that enforces that limit. The measurement is scaled honestly to
keep the test short: the simulator's window is 45 s with a limit of 450 (600 a minute's rate).
The client's margin (a burst of 1.65 tokens, then 0.99 x the rate: docs/engine.md) keeps any
45 s of a 200-rpm shard at 148 requests, 444 for three, so 450 in 45 s is as strict as 600 in
a minute, with room for a few requests' network jitter. The demand is more than 450 requests,
so shards that each spent the whole 600 a minute (1,800 together, the old behaviour) pass 450
within about 15 s: the peak goes over the limit and the simulator answers 429.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.cli.options import shard_limits
from tests.run.support import SimProcess, clean_env, roots_manifest, spawn_run, write_manifest

KEY = "sim-shard-limits-key"
TASKS = 240  # a create and a status call each, at least: more than 450 API requests


@pytest.mark.parametrize(
    ("given", "shard", "used"),
    [
        ((None, None), None, (1000, 10_000.0)),
        ((None, None), (2, 3), (334, 10_000.0 / 3)),
        ((5, 600.0), (1, 3), (2, 200.0)),
        ((1, 90.0), (3, 4), (1, 22.5)),  # at least one task in flight
        ((7, 120.0), None, (7, 120.0)),
    ],
)
def test_each_shard_takes_its_share_of_the_keys_limits(
    given: tuple[int | None, float | None],
    shard: tuple[int, int] | None,
    used: tuple[int, float],
) -> None:
    assert shard_limits(*given, shard) == used


@pytest.mark.slow
@pytest.mark.timeout(300)  # about a minute: the demand must outlast one rate window
def test_three_concurrent_shards_stay_inside_the_keys_rate_limit(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("limits", TASKS))
    sim_args = ("--api-key", KEY, "--rpm", "450", "--rate-window", "45", "--task-seconds", "0.3")
    with SimProcess(tmp_path, *sim_args) as sim:
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        runs = [
            spawn_run(
                manifest,
                tmp_path / f"out{index}",  # as matrix jobs: one directory each (lease.py)
                *("--shard", f"{index}/3", "--rpm", "600", "--json"),
                base_url=sim.base_url,
                api_key=KEY,
                logs=tmp_path / "logs",
                tag=f"shard{index}",
                env=env,
            )
            for index in (1, 2, 3)
        ]
        for run in runs:
            assert run.proc.wait(timeout=280) == 0, run.output()
        stats = sim.stats()
    by_endpoint = stats["requests_by_endpoint"]
    requests = by_endpoint["create"] + by_endpoint["status"]  # API requests: the limit's
    assert requests > 450  # more than one window's limit: the limit was in play
    assert stats["peak_per_window"] <= 450, stats
    assert stats["rate_limited"] <= requests / 100, stats
    done = 0
    for index in (1, 2, 3):  # what each shard used is in its report
        out = tmp_path / f"out{index}"
        report = json.loads((out / f"report.shard-{index}of3.json").read_text())
        settings = report["run"]["settings"]
        assert (settings["shard"], settings["rpm"], settings["max_active"]) == (
            f"{index}/3",
            200.0,
            334,
        )
        done += sum(1 for task in report["tasks"] if task["state"] == "downloaded")
        assert not (out / "report.json").exists()  # merge writes that one
    assert done == TASKS
