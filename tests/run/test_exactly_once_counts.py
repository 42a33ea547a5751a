"""Counts that add up: what a run says it created is what the API created, and its ending
buckets sum to the plan; ``plan`` and ``run`` agree on which outputs are done.

``flux-pipeline run`` subprocesses against a simulator thread (``support.quick_sim``), with
a ``HostileProxy`` where the API must refuse something. Each test reproduced its symptom
before the fix (see test_exactly_once.py).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

from flux_pipeline.simulator import Faults

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    claimed_created,
    clean_env,
    cli_json,
    quick_sim,
    roots_manifest,
    run_argv,
    spawn_run,
    wait_for,
    write_manifest,
)

KEY = "counts-key"
CREATE = "/api/v1/generateTask/flux-kontext"
ENDING = re.compile(r"^flux-pipeline: (?:[a-z ]+|stopped early \([^)]*\)): ([^;\n]*);", re.M)
BUCKET = re.compile(r"(\d+) ([a-z][a-z ]*)")


def run_cmd(
    manifest: Path, out: Path, *extra: str, base_url: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(manifest, out, *extra),
        capture_output=True,
        text=True,
        env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=base_url),
        timeout=90,
        check=False,
    )


def ending_buckets(text: str) -> dict[str, int]:
    """The buckets of the run's ending line: ``<verdict>: 6 done, 1 failed; ...``."""
    endings = ENDING.findall(text)
    assert endings, text
    return {name.strip(): int(n) for n, name in BUCKET.findall(endings[-1])}


def chain(name: str, roots: int, *, root_prompt: str, children: int) -> str:
    subjects = [f"s{i}" for i in range(roots)]
    return (
        "version: 1\n"
        f"name: {name}\n"
        "defaults:\n"
        "  input: {mode: pro, aspect_ratio: '1:1', output_format: png}\n"
        "steps:\n"
        "  - id: shot\n"
        "    matrix:\n"
        f"      subject: {json.dumps(subjects)}\n"
        f"    prompt: '{root_prompt} {{{{ subject }}}}'\n"
        "  - id: edit\n"
        "    from: shot\n"
        f"    repeat: {children}\n"
        "    prompt: 'give it a red scarf'\n"
    )


# --- 8a. refused creates are not "created (billed)" ------------------------------------------


def test_creates_refused_with_400_are_not_counted_as_created(tmp_path: Path) -> None:
    """The proxy refuses 3 of 12 creates with an API 400 without passing them on: the API
    created 9 tasks, and no line of the run may claim more."""
    refused: list[str] = []

    def before(exchange: Exchange) -> Answer | None:
        if exchange.path == CREATE and exchange.json()["input"]["prompt"] in REFUSED:
            refused.append(exchange.json()["input"]["prompt"])
            return Answer.of_json(
                {"code": 400, "message": "input.prompt: refused", "data": None}, 400
            )
        return None

    manifest = write_manifest(tmp_path, roots_manifest("refused", 12))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, before=before) as proxy:
        result = run_cmd(manifest, out, base_url=proxy.base_url)
        creates = sim.stats()["creates"]
    text = result.stdout + result.stderr
    assert refused, text
    assert creates == 12 - len(set(refused))
    assert claimed_created(text), text
    assert max(claimed_created(text)) <= creates, text
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["tasks_created"] <= creates


REFUSED = {"subject number 1", "subject number 5", "subject number 9"}


# --- 8b. a stop with tasks never sent ------------------------------------------------------


def test_a_stop_does_not_claim_unsent_tasks_were_created(tmp_path: Path) -> None:
    """60 tasks, a budget of 300 requests/min: stopped after the first progress line, most
    were never sent; no line may claim more created than the API received."""
    manifest = write_manifest(tmp_path, roots_manifest("unsent", 60))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        run = spawn_run(
            manifest,
            out,
            "--rpm",
            "300",
            base_url=sim.base_url,
            api_key=KEY,
            logs=tmp_path,
            tag="run",
        )
        try:
            wait_for(lambda: "created" in run.output(), timeout=30, what="a progress line")
            run.proc.send_signal(signal.SIGINT)
            code = run.proc.wait(timeout=30)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        creates = sim.stats()["creates"]
    text = run.output()
    assert code == 3, text
    assert creates < 60
    assert max(claimed_created(text)) <= creates, text


# --- 8c. blocked is its own bucket ---------------------------------------------------------


def test_children_of_failed_parents_are_counted_blocked(tmp_path: Path) -> None:
    """16 roots fail (a blocked word), each with 2 chained edits: 48 planned, the ending
    says 16 failed and 32 blocked, exit 1."""
    manifest = write_manifest(tmp_path, chain("blocked", 16, root_prompt="a forbidden", children=2))
    out = tmp_path / "out"
    with quick_sim(KEY, block_words=("forbidden",)) as sim:
        result = run_cmd(manifest, out, base_url=sim.base_url)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert ending_buckets(text) == {"failed": 16, "blocked": 32}, text


# --- 8d. the buckets sum to the plan -------------------------------------------------------


def test_the_ending_buckets_sum_to_the_plan(tmp_path: Path) -> None:
    """Every download is cut short (the simulator's truncation): 2 roots incomplete, their
    2 edits waiting. The ending's buckets add up to the 4 planned tasks."""
    manifest = write_manifest(tmp_path, chain("short", 2, root_prompt="a", children=1))
    out = tmp_path / "out"
    with quick_sim(KEY, faults=Faults(truncate_rate=1.0)) as sim:
        result = run_cmd(manifest, out, base_url=sim.base_url)
    text = result.stdout + result.stderr
    assert result.returncode in (1, 3), text
    assert sum(ending_buckets(text).values()) == 4, text


# --- 8e. plan and run agree on "done" ------------------------------------------------------


def test_plan_and_run_agree_on_an_output_with_the_wrong_content(tmp_path: Path) -> None:
    """An output replaced by other bytes of the same size: ``plan`` must not call it done
    (size + SHA-256, as ``run`` checks), and ``run`` fetches it again."""
    manifest = write_manifest(tmp_path, roots_manifest("altered", 2))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        first = run_cmd(manifest, out, base_url=sim.base_url)
        assert first.returncode == 0, first.stdout + first.stderr
        files = sorted((out / "shot").glob("*.png"))
        assert len(files) == 2
        altered = files[0]
        original = altered.read_bytes()
        altered.write_bytes(bytes(b ^ 0xFF for b in original))  # same size, other bytes
        plan = cli_json("plan", str(manifest), "--json", "--out", str(out))
        second = run_cmd(manifest, out, base_url=sim.base_url)
        creates = sim.stats()["creates"]
    reasons = {t["output"]: t["reason"] for t in plan["tasks"]}
    rel = str(altered.relative_to(out))
    assert reasons[str(files[1].relative_to(out))] == "done"
    assert reasons[rel] != "done", plan["tasks"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert creates == 2  # fetched again, not created again
    assert altered.read_bytes() == original
