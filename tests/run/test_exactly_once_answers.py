"""One bad answer for one task harms that task only; a short download is never "done".

A ``HostileProxy`` in front of a simulator (``support.quick_sim``: a thread in the test
process, over loopback HTTP) forwards every request, so the simulator did what was asked,
and replaces one chosen answer. The run is a ``flux-pipeline run`` subprocess. Each test
reproduced its symptom before the fix (see test_exactly_once.py).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.media import image_complete

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    clean_env,
    db_rows,
    image_files,
    lost_creates,
    quick_sim,
    roots_manifest,
    run_argv,
    spawn_run,
    state_path,
    submitting,
    wait_for,
    write_manifest,
)

KEY = "answers-key"
CREATE = "/api/v1/generateTask/flux-kontext"
STATUS = "/api/v1/statusTask/flux-kontext"
TASKS = 12


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


class Once:
    """A proxy rule: the first answer ``pick`` accepts is replaced by ``make(exchange,
    answer)``. With ``hold_creates_after=N`` every create after the first N is answered
    ``hold`` seconds late (processed at once: the task exists while its answer is held), so
    creates are still in flight when the bad answer comes. With ``sticky`` every later answer
    to the same request (the same taskId's status) is replaced too: a bad answer that stays."""

    def __init__(
        self,
        pick: Callable[[Exchange, Answer], bool],
        make: Callable[[Exchange, Answer], Answer],
        *,
        hold_creates_after: int | None = None,
        hold: float = 0.0,
        sticky: bool = False,
    ) -> None:
        self.sticky = sticky
        self.pick = pick
        self.make = make
        self.hold_after = hold_creates_after
        self.hold = hold
        self.creates = 0
        self.hits: list[Exchange] = []

    async def __call__(self, exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path == CREATE:
            self.creates += 1
            if self.hold_after is not None and self.creates > self.hold_after:
                await asyncio.sleep(self.hold)  # the hostile server's delay, not a wait
        if self.sticky and self.hits and exchange.target == self.hits[0].target:
            return self.make(exchange, answer)
        if not self.hits and self.pick(exchange, answer):
            self.hits.append(exchange)
            return self.make(exchange, answer)
        return answer


def is_status(exchange: Exchange, answer: Answer) -> bool:
    return exchange.path == STATUS


def is_success(exchange: Exchange, answer: Answer) -> bool:
    if exchange.path != STATUS or answer.status != 200:
        return False
    data = answer.payload().get("data") or {}
    return bool(data.get("state") == "success")


def changed(
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[[Exchange, Answer], Answer]:
    """``make`` for ``Once``: the same status answer with its ``data`` changed."""

    def make(exchange: Exchange, answer: Answer) -> Answer:
        return envelope(change(dict(answer.payload()["data"])))

    return make


def replaced(replacement: Answer) -> Callable[[Exchange, Answer], Answer]:
    return lambda exchange, answer: replacement


def envelope(data: object) -> Answer:
    return Answer.of_json({"code": 200, "message": "success", "data": data})


@dataclass
class Through:
    first: subprocess.CompletedProcess[str]
    lost: list[str]  # taskIds the API issued that the DB does not hold after the first run
    done: int  # tasks downloaded after the first run
    again: subprocess.CompletedProcess[str] | None


def run_through(tmp_path: Path, rule: Once, *, rerun: bool = False, tasks: int = TASKS) -> Through:
    """Run ``tasks`` root tasks once through the proxy (then, with ``rerun``, again straight
    at the simulator). Returns the first run, the taskIds the API issued that the DB does
    not hold, how many were downloaded, and the rerun."""
    manifest = write_manifest(tmp_path, roots_manifest("bad", tasks))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, rule) as proxy:
        first = run_cmd(manifest, out, base_url=proxy.base_url)
        lost = lost_creates(sim, out)
        done = downloaded(tmp_path)
        again = run_cmd(manifest, out, base_url=sim.base_url) if rerun else None
    assert rule.hits, "the bad answer was never sent"
    return Through(first, lost, done, again)


def output_of(result: subprocess.CompletedProcess[str] | None) -> str:
    assert result is not None
    return result.stdout + result.stderr


def downloaded(tmp_path: Path) -> int:
    return sum(r.state == "downloaded" for r in db_rows(state_path(tmp_path / "out")).values())


# --- 4. one bad status answer ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        Answer.of_json({"code": 400, "message": "bad request", "data": None}, status=400),
        Answer(302, b"", [("location", "http://127.0.0.1:9/elsewhere")]),
    ],
    ids=["http-400", "http-302"],
)
def test_one_bad_status_answer_harms_one_task(tmp_path: Path, bad: Answer) -> None:
    """The first status answer is replaced while the answers of 8 creates are still held by
    the proxy (the API created those tasks). Every taskId the API issued ends in the DB, the
    other tasks finish, the run ends 0 or 1 (the task retried, or held with a reason)."""
    rule = Once(is_status, replaced(bad), hold_creates_after=4, hold=3.0)
    run = run_through(tmp_path, rule)
    assert run.lost == [], output_of(run.first)
    assert run.first.returncode in (0, 1), output_of(run.first)
    assert "Traceback" not in output_of(run.first)
    assert run.done >= TASKS - 1, output_of(run.first)


def test_a_huge_cost_time_harms_no_task_and_blocks_no_rerun(tmp_path: Path) -> None:
    rule = Once(is_success, changed(lambda data: {**data, "costTime": 2**70}))
    run = run_through(tmp_path, rule, rerun=True)
    assert run.lost == [], output_of(run.first)
    assert run.first.returncode in (0, 1), output_of(run.first)
    assert run.done >= TASKS - 1, output_of(run.first)
    assert run.again is not None
    assert run.again.returncode in (0, 1), output_of(run.again)


def test_a_malformed_result_url_harms_one_task(tmp_path: Path) -> None:
    urls = json.dumps({"resultUrls": ["http://[::1"]})
    rule = Once(is_success, changed(lambda data: {**data, "resultJson": urls}), sticky=True)
    run = run_through(tmp_path, rule, rerun=True)
    assert run.lost == [], output_of(run.first)
    # that task failed (1) or is held with a reason (1, or 3 if a rerun is to retry it)
    assert run.first.returncode in (1, 3), output_of(run.first)
    assert "internal error" not in output_of(run.first)
    assert run.done == TASKS - 1, output_of(run.first)
    assert run.again is not None
    assert run.again.returncode in (0, 1), output_of(run.again)
    assert "internal error" not in output_of(run.again)


def test_a_deeply_nested_status_body_harms_one_task(tmp_path: Path) -> None:
    deep = 100_000
    body = '{"code":200,"message":"success","data":' + "[" * deep + "]" * deep + "}"
    rule = Once(is_status, replaced(Answer.raw_json(body)))
    run = run_through(tmp_path, rule)
    assert "RecursionError" not in output_of(run.first)
    assert "Traceback" not in output_of(run.first)
    assert run.lost == [], output_of(run.first)
    assert run.first.returncode in (0, 1), output_of(run.first)
    assert run.done >= TASKS - 1, output_of(run.first)


CHAIN = """\
version: 1
name: chain
defaults:
  input: {mode: pro, aspect_ratio: '1:1', output_format: png}
steps:
  - id: shot
    matrix:
      subject: [fox, owl, bear]
    prompt: 'a {{ subject }}'
  - id: edit
    from: shot
    prompt: "{{ ['give it a red scarf'][parent.output_index] }}"
"""


def test_a_chained_template_failing_for_a_second_output_does_not_abort(tmp_path: Path) -> None:
    """Every parent returns 2 images; the edit's template renders for image 0 and fails for
    image 1 (an index out of range). The run does not abort (it ends 0 or 1 on its own),
    the edits of image 0 are done, no task is left ambiguous."""
    manifest = write_manifest(tmp_path, CHAIN)
    out = tmp_path / "out"
    with quick_sim(KEY, results_per_task=2) as sim:
        run = spawn_run(manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path, tag="run")
        try:
            wait_for(
                lambda: run.proc.poll() is not None or "error(s) in manifest" in run.output(),
                timeout=60,
                what="the run to end or report the template error",
            )
            code: int | None = run.proc.wait(timeout=4)
        except subprocess.TimeoutExpired:
            code = None  # it went on running after the error
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
        lost = lost_creates(sim, out)
    rows = db_rows(state_path(out))
    assert code in (0, 1), f"exit {code}: {run.output()}"
    assert "Traceback" not in run.output()
    assert lost == []
    assert submitting(out) == []
    edits = [r for r in rows.values() if "/edit#" in r.readable_id and "~" not in r.readable_id]
    assert len(edits) == 3, rows
    assert {r.state for r in edits} == {"downloaded"}, rows


# --- 7. a download closed early without a Content-Length -------------------------------------


def test_a_short_close_delimited_download_is_retried_never_done(tmp_path: Path) -> None:
    """The first result download is served without a Content-Length, half the image, then
    the connection closed (a legal HTTP/1.1 answer: nothing tells the client it is short).
    The task is retried and every recorded output is a complete image."""
    cut: list[str] = []

    def rule(exchange: Exchange, answer: Answer) -> Answer:
        if cut or not exchange.path.startswith("/results/") or answer.status != 200:
            return answer
        cut.append(exchange.path)
        return Answer(200, answer.body[: len(answer.body) // 2], answer.headers, True)

    manifest = write_manifest(tmp_path, roots_manifest("short", 4))
    out = tmp_path / "out"
    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, rule) as proxy:
        first = run_cmd(manifest, out, base_url=proxy.base_url)
        downloads = proxy.requests_to(cut[0]) if cut else []
    assert cut, "no download went through the proxy"
    files = image_files(out)
    assert first.returncode == 0, output_of(first)
    assert len(files) == 4
    assert all(image_complete(path, "png") for path in files), files
    assert len(downloads) >= 2  # the cut download was tried again
