"""`flux-pipeline sim`: serve the API simulator on a loopback port.

Prints one line, ``flux-pipeline simulator listening on http://HOST:PORT``, once it accepts
connections, then serves until SIGINT/SIGTERM and exits 0. With ``--state PATH`` its tasks,
credits and counters outlive it (``persist.py``); a malformed file is refused (exit 2, the file
left as it is).
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from flux_pipeline.simulator.app import create_app, simulator_of
from flux_pipeline.simulator.clock import MANUAL_EPOCH, ManualClock
from flux_pipeline.simulator.config import FIFTEEN_DAYS, Faults, SimConfig
from flux_pipeline.simulator.persist import StateError, StateFile
from flux_pipeline.simulator.server import base_url_of, bind_remembered, check_loopback, serve


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (``nan`` passes every range
    comparison, so ``--task-seconds nan`` would break the task clock)."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number: float = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


_rate = FiniteFloatRange(0.0, 1.0)


@click.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1", help="Loopback address to listen on (others refused).")
@click.option("--port", default=8765, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--api-key", "api_keys", multiple=True, help="Accepted key (repeatable) [default: sim-key]."
)
@click.option(
    "--task-seconds",
    default=30.0,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Mean task duration.",
)
@click.option(
    "--task-spread",
    type=FiniteFloatRange(min=0),
    help="Std. deviation of durations [default: task-seconds/4].",
)
@click.option(
    "--time-scale",
    default=1.0,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Multiplies every task duration.",
)
@click.option(
    "--max-concurrent", default=1000, type=click.IntRange(min=1), help="Unfinished tasks per key."
)
@click.option(
    "--rpm", default=10_000, type=click.IntRange(min=1), help="API requests per key per window."
)
@click.option(
    "--rate-window",
    default=60.0,
    type=FiniteFloatRange(min=0, min_open=True),
    help="Rate window, seconds (not scaled).",
)
@click.option(
    "--credits", type=FiniteFloatRange(min=0), help="Credit balance [default: unlimited]."
)
@click.option("--cost-pro", default=5.0, type=FiniteFloatRange(min=0), help="Credits per pro task.")
@click.option(
    "--cost-max", default=10.0, type=FiniteFloatRange(min=0), help="Credits per max task."
)
@click.option(
    "--result-ttl",
    default=FIFTEEN_DAYS,
    type=FiniteFloatRange(min=0),
    help="Seconds a result stays downloadable.",
)
@click.option(
    "--block-word",
    "block_words",
    multiple=True,
    help="Prompt word failing with CONTENT_VIOLATION (repeatable).",
)
@click.option(
    "--unreachable-host",
    "unreachable_hosts",
    multiple=True,
    help="Image host failing with INVALID_IMAGE_URL (repeatable).",
)
@click.option(
    "--results-per-task", default=1, type=click.IntRange(min=1), help="Result URLs per task."
)
@click.option(
    "--image-size",
    default=256,
    type=click.IntRange(16, 4096),
    help="Long side of result images, px.",
)
@click.option("--seed", default=0, type=int, help="Seed of durations, ids and faults.")
@click.option("--manual-clock", is_flag=True, help="Time moves only via POST /_sim/clock.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep tasks, credits and counters in this file across restarts (with --port 0: "
    "the port served before, when free).",
)
@click.option("--error-rate", default=0.0, type=_rate, help="Share of API requests answered 5xx.")
@click.option("--drop-rate", default=0.0, type=_rate, help="Share of API connections dropped.")
@click.option("--drop-after", is_flag=True, help="Drop only after processing (ambiguous creates).")
@click.option(
    "--lost-after-rate",
    default=0.0,
    type=_rate,
    help="Share of API requests processed, then dropped (a create is billed, its answer lost).",
)
@click.option(
    "--gateway-rate",
    default=0.0,
    type=_rate,
    help="Share of API requests answered by a proxy's 502/504 page before the API.",
)
@click.option(
    "--gateway-after-rate",
    default=0.0,
    type=_rate,
    help="Share of API requests answered by a proxy's 502/504 page after processing.",
)
@click.option("--slow-rate", default=0.0, type=_rate, help="Share of API answers delayed.")
@click.option(
    "--slow-seconds", default=2.0, type=FiniteFloatRange(min=0), help="Delay of slow answers."
)
@click.option(
    "--truncate-rate", default=0.0, type=_rate, help="Share of result downloads cut short."
)
@click.option(
    "--errors-as-200", is_flag=True, help="Answer errors with HTTP 200 (code in the body)."
)
@click.option(
    "--rate-limit-burst",
    default=0,
    type=click.IntRange(min=0),
    help="Answer the next N API requests 429.",
)
def sim(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    task_seconds: float,
    task_spread: float | None,
    time_scale: float,
    max_concurrent: int,
    rpm: int,
    rate_window: float,
    credits: float | None,
    cost_pro: float,
    cost_max: float,
    result_ttl: float,
    block_words: tuple[str, ...],
    unreachable_hosts: tuple[str, ...],
    results_per_task: int,
    image_size: int,
    seed: int,
    manual_clock: bool,
    state_path: Path | None,
    error_rate: float,
    drop_rate: float,
    drop_after: bool,
    lost_after_rate: float,
    gateway_rate: float,
    gateway_after_rate: float,
    slow_rate: float,
    slow_seconds: float,
    truncate_rate: float,
    errors_as_200: bool,
    rate_limit_burst: int,
) -> int:
    """Serve the API simulator on a loopback port (fault injection at POST /_sim/faults)."""
    try:
        check_loopback(host)
        faults = Faults(
            error_rate=error_rate,
            drop_rate=drop_rate,
            drop_after=drop_after,
            lost_after_rate=lost_after_rate,
            gateway_rate=gateway_rate,
            gateway_after_rate=gateway_after_rate,
            slow_rate=slow_rate,
            slow_seconds=slow_seconds,
            truncate_rate=truncate_rate,
            errors_as_200=errors_as_200,
            rate_limit_burst=rate_limit_burst,
        )
        config = SimConfig(
            api_keys=api_keys or ("sim-key",),
            task_seconds=task_seconds,
            task_spread=task_spread,
            time_scale=time_scale,
            max_concurrent=max_concurrent,
            rpm=rpm,
            rate_window=rate_window,
            credits=credits,
            cost_pro=cost_pro,
            cost_max=cost_max,
            result_ttl=result_ttl,
            block_words=block_words,
            unreachable_hosts=unreachable_hosts,
            results_per_task=results_per_task,
            image_size=image_size,
            faults=faults,
            seed=seed,
        )
        state = StateFile.open(state_path) if state_path is not None else None
    except StateError as exc:
        raise click.ClickException(f"simulator state not loaded: {exc}") from None
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    saved = state.saved if state is not None else None
    try:
        sock, moved_from = bind_remembered(host, port, state)
    except OSError as exc:
        if state is not None:
            state.close()
        raise click.ClickException(str(exc)) from exc
    clock = ManualClock(max(MANUAL_EPOCH, saved.now if saved else 0.0)) if manual_clock else None
    app = create_app(config, clock, state)
    base_url = base_url_of(sock)
    simulator_of(app).serving(base_url)

    def announce() -> None:
        if moved_from is not None:
            click.echo(
                f"flux-pipeline sim: port {moved_from} (served before) is taken: earlier result"
                " URLs still work as references, but downloads from them fail",
                err=True,
            )
        click.echo(f"flux-pipeline simulator listening on {base_url}")
        sys.stdout.flush()

    def quietly(signum: int, frame: FrameType | None) -> None:
        """uvicorn re-raises the signal that stopped it: by then, it only means "done"."""

    previous = {sig: signal.signal(sig, quietly) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(app, sock, on_started=announce)
    finally:
        sock.close()
        if state is not None:
            state.close()
            if state.failure is not None:
                click.echo(f"flux-pipeline sim: {state.failure}", err=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
