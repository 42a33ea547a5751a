"""An API that echoes the key (or the callback secret) in any encoding puts it in no output:
echo encodings x outputs (docs/secrets.md).

Each case is a CLI run against the simulator behind a hostile proxy on loopback. The proxy
refuses one task's create with a message echoing the key, fails another at its status call
with a failCode/failMsg echoing it, and gives a third a result URL carrying it. Then every
output is searched for every encoding of the key: the state DB (with its WAL files),
report.json, report.md, index.html and the gallery's data.js, junit.xml, the GitHub
annotations and step summary (``GITHUB_ACTIONS=true``), standard output and standard error.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    clean_env,
    quick_sim,
    roots_manifest,
    run_argv,
    state_path,
    write_manifest,
)

KEY = "sk/AbCd+EfGh/1234=="  # "/", "+" and "=" change under JSON, URL and base64 encoding
PLACEHOLDER = "@@ECHO@@"


def _json_slashes(key: str) -> str:  # PHP's default json_encode
    return json.dumps(key)[1:-1].replace("/", "\\/")


def _json_unicode(key: str) -> str:  # every character as \\uXXXX
    return "".join(f"\\u{ord(c):04x}" for c in key)


def _json_unicode_mixed(key: str) -> str:  # some characters escaped, upper-case hex
    return "".join(f"\\u{ord(c):04X}" if i % 2 else c for i, c in enumerate(key))


def _content(encode: Callable[[str], str]) -> Callable[[str], str]:
    """An encoding of the text itself, written as an ordinary JSON string."""
    return lambda key: json.dumps(encode(key))[1:-1]


def _b64(key: str) -> str:
    return base64.b64encode(key.encode()).decode()


def _b64_url_unpadded(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _b64_in_blob(key: str) -> str:  # an echoed Authorization header, base64 of "Bearer <key>"
    return base64.b64encode(b"Bearer " + key.encode() + b" trailing").decode()


# how the echo is written inside the JSON answer (wire-level escapes, or encoded text)
ECHOES: dict[str, Callable[[str], str]] = {
    "raw": _content(lambda k: k),
    "json-slashes": _json_slashes,
    "json-unicode": _json_unicode,
    "json-unicode-mixed": _json_unicode_mixed,
    "text-unicode-escapes": _content(_json_unicode),
    "url-quote": _content(urllib.parse.quote),
    "url-quote-all": _content(lambda k: urllib.parse.quote(k, safe="")),
    "url-quote-plus": _content(urllib.parse.quote_plus),
    "base64": _content(_b64),
    "base64-urlsafe-unpadded": _content(_b64_url_unpadded),
    "base64-inside-a-blob": _content(_b64_in_blob),
}


def needles(secret: str) -> list[bytes]:
    """What must be in no output: the secret in every encoding, and a telling fragment."""
    forms = [
        secret,
        secret[3:12],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        _json_unicode(secret),
        _json_unicode(secret).upper(),
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        _b64(secret).rstrip("="),
        _b64_url_unpadded(secret),
        base64.b64encode(b"Bearer " + secret.encode()).decode()[:-4],
    ]
    return sorted({f.encode() for f in forms})


def echoing_rule(wire: str) -> Callable[[Exchange, Answer], Answer]:
    """Create of "subject number 0" refused echoing; "number 1" fails at its status call
    echoing; "number 2" succeeds with the echo in its result URL's query."""
    prompts: dict[str, str] = {}

    def answer_of(payload: object, status: int = 200) -> Answer:
        text = json.dumps(payload, separators=(",", ":")).replace(PLACEHOLDER, wire)
        return Answer.raw_json(text, status)

    def rule(exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path == CREATE_PATH:
            prompt = exchange.json()["input"]["prompt"]
            if prompt == "subject number 0":
                message = f"invalid request for Bearer {PLACEHOLDER}"
                return answer_of({"code": 400, "message": message, "data": None}, 400)
            if answer.status == 200:
                prompts[answer.payload()["data"]["taskId"]] = prompt
            return answer
        if exchange.path != STATUS_PATH or answer.status != 200:
            return answer
        body = answer.payload()
        data = body.get("data") or {}
        prompt = prompts.get(str(exchange.query("taskId")))
        if prompt == "subject number 1":
            data = data | {"state": "failed", "failCode": f"E_{PLACEHOLDER}"}
            data["failMsg"] = f"key {PLACEHOLDER} is\nnot allowed"
            data.pop("resultJson", None)
        elif prompt == "subject number 2" and data.get("state") == "success":
            urls = json.loads(data["resultJson"])["resultUrls"]
            signed = [f"{u}?sig={PLACEHOLDER}" for u in urls]
            data["resultJson"] = json.dumps({"resultUrls": signed})
        else:
            return answer
        return answer_of(body | {"data": data})

    return rule


def run_cli(tmp_path: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    manifest = write_manifest(tmp_path, roots_manifest("echoes", 4))
    env = clean_env(
        APIXO_API_KEY=KEY,
        APIXO_BASE_URL=base_url,
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
        GITHUB_WORKSPACE=str(tmp_path),
    )
    return subprocess.run(
        run_argv(manifest, tmp_path / "out", *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def outputs(tmp_path: Path, result: subprocess.CompletedProcess[str]) -> dict[str, bytes]:
    out = tmp_path / "out"
    db = state_path(out)
    found = {
        "state DB": b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*")),
        "stdout": result.stdout.encode(),
        # annotations escape "%" as "%25" (docs/reports.md): search them as GitHub shows them
        "annotations": result.stdout.replace("%25", "%").encode(),
        "stderr": result.stderr.encode(),
        "step summary": (tmp_path / "summary.md").read_bytes(),
    }
    for name in ("report.json", "report.md", "index.html", "junit.xml"):
        found[name] = (out / name).read_bytes()
    found["gallery data"] = (out / ".flux-pipeline/gallery/data.js").read_bytes()
    return found


def leaks(found: dict[str, bytes], secret: str) -> list[str]:
    return [
        f"{where}: {needle!r}"
        for where, data in found.items()
        for needle in needles(secret)
        if needle in data
    ]


@pytest.mark.parametrize("echo", sorted(ECHOES))
def test_an_echoed_key_is_in_no_output(tmp_path: Path, echo: str) -> None:
    wire = ECHOES[echo](KEY)
    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, echoing_rule(wire)) as proxy:
        result = run_cli(tmp_path, proxy.base_url)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text  # two tasks failed, the others are done
    found = outputs(tmp_path, result)
    assert b"[redacted]" in found["state DB"]  # the echoes were there, and redacted
    assert b"::error " in found["annotations"], text
    assert leaks(found, KEY) == []
    # one line per error: the failMsg's newline is escaped wherever it is printed
    assert "is\\nnot allowed" in result.stdout
    assert all(not line.startswith("not allowed") for line in text.splitlines())


def test_a_public_url_typo_puts_the_callback_secret_in_no_report(tmp_path: Path) -> None:
    """Callback mode with a mistyped ``--public-url``: the API refuses every create, echoing
    the callback URL (secret included) JSON-escaped. The secret is in no output. (A typo on a
    loopback address is refused before any create by the receiver's probe, run/checks.py;
    a public host name cannot be probed from here, so this one reaches the API.)"""
    seen: list[str] = []

    def rule(exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path != CREATE_PATH:
            return answer
        url = exchange.json()["callback_url"]
        seen.append(url)
        message = f"callback_url {_json_slashes(url)} is not reachable"
        text = json.dumps({"code": 400, "message": PLACEHOLDER, "data": None})
        return Answer.raw_json(text.replace(PLACEHOLDER, message), 400)

    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, rule) as proxy:
        result = run_cli(
            tmp_path,
            proxy.base_url,
            "--request-type",
            "callback",
            "--public-url",
            "http://callbacks.example.invalid/typo",
        )
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    assert seen, text
    secret = seen[0].split("/callbacks/", 1)[1].split("/")[0]
    found = outputs(tmp_path, result)
    found["stdout"] = found["stdout"].replace(f"::add-mask::{secret}\n".encode(), b"", 1)
    found["annotations"] = found["annotations"].replace(f"::add-mask::{secret}".encode(), b"")
    assert b"[redacted]" in found["report.json"]
    assert leaks(found, secret) == []
    assert leaks(found, KEY) == []
