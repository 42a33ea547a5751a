"""A seeded fuzz of hostile API answers against whole CLI runs (docs/secrets.md,
docs/api-contract.md "Caps on answers").

A proxy in front of the simulator, on loopback, answers creates, status calls and downloads
with generated hostile variants: garbage, deep JSON, wrong types, huge numbers, odd encodings,
unusable result URLs, gateway pages, rate limits, cut bodies, answers about another task, and
the API key echoed in every encoding (raw, JSON-escaped, URL-encoded, base64). Each choice is
a function of the seed, the request's task and how many times it was asked, so a seed gives
the same answers whatever order the run's concurrent requests come in. Checked for each run:
it ends in time (subprocess timeout), exits with a documented code, puts the key in no output,
and every taskId the proxy handed out is in the state DB.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_pipeline.errors import ExitCode
from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    clean_env,
    db_rows,
    quick_sim,
    roots_manifest,
    run_argv,
    state_path,
    write_manifest,
)
from .test_secret_echoes import ECHOES, KEY, leaks, outputs

TASKS = 16
DEADLINE = 8  # seconds: the run stops (resumable) by then at the latest
DOCUMENTED = {ExitCode.OK, ExitCode.TASKS_FAILED, ExitCode.RESUMABLE}


def _echo(rng: random.Random) -> str:
    """The key in a random encoding, as it is written inside a JSON string."""
    return ECHOES[rng.choice(sorted(ECHOES))](KEY)


def _json(rng: random.Random, payload: object, status: int = 200) -> Answer:
    """``payload`` as JSON with every "@@ECHO@@" replaced by an echo of the key."""
    text = json.dumps(payload, separators=(",", ":"))
    while "@@ECHO@@" in text:
        text = text.replace("@@ECHO@@", _echo(rng), 1)
    return Answer.raw_json(text, status)


def _status_variant(rng: random.Random, answer: Answer) -> Answer:
    """A hostile variant of the simulator's status ``answer``."""
    body = answer.payload()
    data = dict(body.get("data") or {})
    tid = data.get("taskId", "t")
    kind = rng.choice(
        [
            "garbage", "deep", "wrong-types", "huge-numbers", "failed-echo", "bad-urls",
            "key-url", "html-5xx", "rate-limited", "cut", "other-task", "unicode", "nan",
            "error-echo", "empty",
        ]
    )  # fmt: skip
    if kind == "garbage":
        return Answer(200, bytes(rng.randrange(256) for _ in range(64)), [])
    if kind == "deep":
        depth = rng.choice([65, 1000, 100_000])
        return Answer.raw_json('{"code":200,"data":' + "[" * depth + "]" * depth + "}")
    if kind == "wrong-types":
        field = rng.choice(["state", "resultJson", "failMsg", "createTime", "taskId", "data"])
        value: object = rng.choice([5, [], {}, True, None, "x"])
        if field == "data":
            return _json(rng, {"code": 200, "message": "ok", "data": value})
        return _json(rng, body | {"data": data | {field: value}})
    if kind == "huge-numbers":
        huge = {"createTime": 10**40, "completeTime": -(10**30), "costTime": 1e308}
        return _json(rng, body | {"code": 200, "data": data | huge})
    if kind == "failed-echo":
        failed = {"state": "failed", "failCode": "E@@ECHO@@", "failMsg": "bad @@ECHO@@\n::x"}
        return _json(rng, body | {"data": data | failed})
    if kind == "bad-urls":
        urls = rng.choice(
            [["ftp://x/y.png"], ["/relative.png"], ["http://"], ["x" * 10_000], ["h"] * 500, []]
        )
        result = {"state": "success", "resultJson": json.dumps({"resultUrls": urls})}
        return _json(rng, body | {"data": data | result})
    if kind == "key-url" and data.get("state") == "success":
        urls = json.loads(data["resultJson"])["resultUrls"]
        signed = [f"{u}?sig=@@ECHO@@" for u in urls]
        return _json(
            rng, body | {"data": data | {"resultJson": json.dumps({"resultUrls": signed})}}
        )
    if kind == "html-5xx":
        return Answer.html(rng.choice([500, 502, 503, 504]))
    if kind == "rate-limited":
        headers = [("content-type", "application/json"), ("retry-after", rng.choice(["0", "1"]))]
        return Answer(429, b'{"code":429,"message":"slow down @@"}', headers)
    if kind == "cut":
        return Answer(200, answer.body[: rng.randrange(len(answer.body))], [], close_delimited=True)
    if kind == "other-task":
        return _json(rng, body | {"data": data | {"taskId": f"{tid}-other"}})
    if kind == "unicode":
        odd = "\u202e\u0000\ud800\U0001f600 @@ECHO@@ \x1b[31m"
        return _json(rng, body | {"message": odd, "data": data | {"failMsg": odd}})
    if kind == "nan":
        return Answer.raw_json('{"code":200,"data":{"taskId":"' + tid + '","createTime":NaN}}')
    if kind == "error-echo":
        status = rng.choice([400, 403, 404, 500])
        return _json(rng, {"code": status, "message": "no @@ECHO@@", "data": None}, status)
    return Answer(200, b"", [("content-type", "application/json")])


def _create_refusal(rng: random.Random) -> Answer:
    """A create refused before the API saw it (nothing created): echoing the key."""
    status = rng.choice([400, 422, 429, 500, 503])
    message = rng.choice(["invalid key @@ECHO@@", "Bearer @@ECHO@@ refused\r\n", "busy"])
    return _json(rng, {"code": status, "message": message, "data": None}, status)


class Fuzzer:
    """The proxy's hostile rules for one seed; ``issued``: every taskId it handed out."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.issued: set[str] = set()
        self.asked: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()

    def rng(self, *about: object) -> random.Random:
        self.asked[repr(about)] += 1
        label = f"{self.seed}:{about!r}:{self.asked[repr(about)]}"
        return random.Random(hashlib.sha256(label.encode()).digest())

    def before(self, exchange: Exchange) -> Answer | None:
        if exchange.path != CREATE_PATH:
            return None
        rng = self.rng("create-before", exchange.json()["input"]["prompt"])
        if rng.random() < 0.25:
            self.kinds["create refused"] += 1
            return _create_refusal(rng)
        return None

    def rule(self, exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path == CREATE_PATH:
            rng = self.rng("create", exchange.json()["input"]["prompt"])
            body = answer.payload()
            if rng.random() < 0.5:  # extra hostile fields, the taskId intact
                body["message"] = "created for @@ECHO@@\n::error::x"
                body["extra"] = {"echo": "@@ECHO@@", "deep": [[[[[]]]]]}
            sent = _json(rng, body)
            task_id = (body.get("data") or {}).get("taskId")
            if body.get("code") == 200 and isinstance(task_id, str):
                self.issued.add(task_id)
            return sent
        if exchange.path == STATUS_PATH and answer.status == 200:
            rng = self.rng("status", exchange.query("taskId"))
            if rng.random() < 0.4:
                self.kinds["status"] += 1
                return _status_variant(rng, answer)
            return answer
        if exchange.path.startswith("/results/"):
            rng = self.rng("download", exchange.path)
            if rng.random() < 0.2:
                self.kinds["download"] += 1
                return rng.choice(
                    [
                        Answer(200, b"not an image @@", [("content-type", "image/png")]),
                        Answer(200, answer.body[:20], [], close_delimited=True),
                        Answer.html(502),
                    ]
                )
        return answer


def _run(tmp_path: Path, fuzzer: Fuzzer) -> subprocess.CompletedProcess[str]:
    manifest = write_manifest(tmp_path, roots_manifest("fuzz", TASKS))
    env = clean_env(
        APIXO_API_KEY=KEY,
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
        GITHUB_WORKSPACE=str(tmp_path),
    )
    with (
        quick_sim(KEY) as sim,
        HostileProxy(sim.base_url, fuzzer.rule, before=fuzzer.before) as proxy,
    ):
        env["APIXO_BASE_URL"] = proxy.base_url
        return subprocess.run(
            run_argv(manifest, tmp_path / "out", "--deadline", f"{DEADLINE}s"),
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE + 20,  # a hang fails the test
            check=False,
        )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_answers_never_hang_leak_or_lose_a_task(tmp_path: Path, seed: int) -> None:
    fuzzer = Fuzzer(seed)
    result = _run(tmp_path, fuzzer)
    text = result.stdout + result.stderr
    assert result.returncode in DOCUMENTED, text
    assert "Traceback" not in text, text
    assert fuzzer.issued, text  # the fuzz let some creates through...
    assert sum(fuzzer.kinds.values()) > 0, text  # ... and answered hostile
    known = {row.task_id for row in db_rows(state_path(tmp_path / "out")).values()}
    assert fuzzer.issued <= known, f"taskIds lost: {sorted(fuzzer.issued - known)}"
    assert leaks(outputs(tmp_path, result), KEY) == []
    print(f"\nseed {seed}: exit {result.returncode}, {len(fuzzer.issued)} taskIds, {fuzzer.kinds}")


def test_the_fuzz_is_deterministic() -> None:
    """The same seed and requests give the same answers (the run's order does not matter)."""

    def answers(seed: int) -> list[bytes]:
        fuzzer = Fuzzer(seed)
        status = Answer.of_json({"code": 200, "data": {"taskId": "t1", "state": "pending"}})
        got = []
        for n in range(30):
            exchange = Exchange("GET", f"{STATUS_PATH}?taskId=t{n % 3}", {}, b"", n)
            got.append(fuzzer.rule(exchange, status).body)
        return got

    make: Callable[[int], list[bytes]] = answers
    assert make(7) == make(7)
    assert make(7) != make(8)
