"""Every refused ``run`` ends by itself, at once, with its documented code and one line
(docs/exit-codes.md, "Refused before the run"). CLI end to end under the watchdog
(``watchdog.bounded``): each of these used to print its error and then wait forever on a
state DB worker thread or a receiver that was never closed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .support import quick_sim, roots_manifest, sim_tasks, state_path, write_manifest
from .watchdog import bounded, cli_argv, env_with

KEY = "no-hang-key"
SIM = ("--simulate", "--sim-task-seconds", "0.1")

# (id, extra arguments, environment, expected code, the one line, as a regex)
REFUSED: list[tuple[str, tuple[str, ...], dict[str, str], int, str]] = [
    (
        "step-summary-unwritable",
        SIM,
        {"GITHUB_STEP_SUMMARY": "/nonexistent/x.md"},
        2,
        r"^flux-pipeline: error: GITHUB_STEP_SUMMARY=/nonexistent/x\.md: cannot append to it",
    ),
    (
        "listen-garbage",
        (*SIM, "--request-type", "callback", "--listen", "garbage"),
        {},
        2,
        r"^flux-pipeline: error: --listen must be HOST:PORT .*'garbage'$",
    ),
    (
        "listen-unresolvable",
        (*SIM, "--request-type", "callback", "--listen", "notahost.invalid:0"),
        {},
        2,
        r"^flux-pipeline: error: --listen: the host 'notahost\.invalid' does not resolve",
    ),
    (
        "listen-port-range",
        (*SIM, "--request-type", "callback", "--listen", "127.0.0.1:70000"),
        {},
        2,
        r"^flux-pipeline: error: --listen must be HOST:PORT with a port from 0 to 65535",
    ),
    (
        "listen-wildcard-without-public-url",
        (*SIM, "--request-type", "callback", "--listen", "0.0.0.0:0"),
        {},
        2,
        r"^flux-pipeline: error: --listen 0\.0\.0\.0:0 listens on every interface.*--public-url",
    ),
    (
        "public-url-unreachable",
        (*SIM, "--request-type", "callback", "--public-url", "http://127.0.0.1:9/"),
        {},
        2,
        r"^flux-pipeline: error: --public-url http://127\.0\.0\.1:9 does not reach this run's "
        r"callback receiver .*nothing was created$",
    ),
    (
        "public-url-malformed",
        (*SIM, "--request-type", "callback", "--public-url", "ftp://example.com"),
        {},
        2,
        r"^flux-pipeline: error: --public-url must be an http\(s\) URL",
    ),
    (
        "base-url-malformed",
        (),
        {"APIXO_API_KEY": KEY, "APIXO_BASE_URL": "http://[::1"},
        2,
        r"^flux-pipeline: error: APIXO_BASE_URL is not a valid URL",
    ),
    (
        "key-non-ascii",
        (),
        {"APIXO_API_KEY": "key-\u00e9", "APIXO_BASE_URL": "http://127.0.0.1:9"},
        2,
        r"^flux-pipeline: error: APIXO_API_KEY contains a non-ASCII character \(at position 5\)",
    ),
    (
        "key-crlf",
        (),
        {"APIXO_API_KEY": "key\r\nX-Injected: 1", "APIXO_BASE_URL": "http://127.0.0.1:9"},
        2,
        r"^flux-pipeline: error: APIXO_API_KEY contains a control character \(at position 4\)",
    ),
]


@pytest.mark.parametrize(
    ("extra", "env", "code", "line"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_refused_run_exits_at_once_with_one_line(
    tmp_path: Path, extra: tuple[str, ...], env: dict[str, str], code: int, line: str
) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("refused", 2))
    ended = bounded(
        cli_argv("run", str(manifest), "--out", str(tmp_path / "out"), *extra), env=env_with(**env)
    )
    assert ended.code == code, ended.lines
    assert len(ended.errors()) == 1, ended.lines
    assert re.search(line, ended.errors()[0]), ended.lines
    assert "key\r" not in ended.stdout + ended.stderr
    assert "X-Injected" not in ended.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_non_finite_float_flag_is_a_usage_error(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("nan", 1))
    for flag in ("--sim-task-seconds", "--rpm"):
        ended = bounded(cli_argv("run", str(manifest), "--simulate", flag, "nan"))
        assert ended.code == 2, ended.lines
        assert ended.lines[-1].startswith(f"Error: Invalid value for '{flag}'"), ended.lines


def test_a_mistyped_manifest_starts_no_simulator(tmp_path: Path) -> None:
    """The manifest is read before the simulator (and the progress display) start."""
    ended = bounded(cli_argv("run", str(tmp_path / "nothere.yaml"), *SIM))
    assert ended.code == 2, ended.lines
    assert not any("simulating" in line for line in ended.lines), ended.lines
    assert ended.lines[-1] == "flux-pipeline: 1 error(s) in manifest", ended.lines


def test_a_state_db_of_another_manifest_is_refused_unless_named(tmp_path: Path) -> None:
    """Two manifests sharing ``--out``: the second is refused (exit 2, one line naming both)
    before anything is created; passing the state DB with ``--state`` uses it on purpose."""
    first = write_manifest(tmp_path, roots_manifest("first", 1), name="first.yaml")
    second = write_manifest(tmp_path, roots_manifest("second", 1), name="second.yaml")
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        env = env_with(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        ran = bounded(cli_argv("run", str(first), "--out", str(out)), env=env)
        assert ran.code == 0, ran.lines
        refused = bounded(cli_argv("run", str(second), "--out", str(out)), env=env)
        created_after_refusal = len(sim_tasks(sim))
        named = bounded(
            cli_argv("run", str(second), "--out", str(out), "--state", str(state_path(out))),
            env=env,
        )
    assert refused.code == 2, refused.lines
    assert len(refused.lines) == 1, refused.lines
    assert "manifest 'first', not 'second'" in refused.lines[0], refused.lines
    assert created_after_refusal == 1
    assert named.code == 0, named.lines


@pytest.mark.anyio
async def test_execute_raises_a_refusal_as_it_is(tmp_path: Path) -> None:
    """``runner.execute`` raises the error itself, not the group of its signal watcher."""
    from flux_pipeline.errors import UsageError
    from flux_pipeline.run.runner import Endpoint, RunOptions, execute

    manifest = write_manifest(tmp_path, roots_manifest("plain", 1))
    options = RunOptions(manifest=manifest, request_type="callback", listen="garbage")
    with pytest.raises(UsageError, match="--listen must be HOST:PORT"):
        await execute(options, endpoint=Endpoint(base_url="http://127.0.0.1:9", api_key="k"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_public_url_that_reaches_the_receiver_passes_its_probe(tmp_path: Path) -> None:
    """``--listen 0.0.0.0:PORT --public-url http://127.0.0.1:PORT``: probed through the
    public URL, it answers; the callback run finishes."""
    manifest = write_manifest(tmp_path, roots_manifest("probed", 2))
    port = _free_port()
    ended = bounded(
        cli_argv(
            "run",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
            *SIM,
            "--request-type",
            "callback",
            "--listen",
            f"0.0.0.0:{port}",
            "--public-url",
            f"http://127.0.0.1:{port}",
        )
    )
    assert ended.code == 0, ended.lines
