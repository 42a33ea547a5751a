"""Speculative admission on its own: a fake clock, learned durations, flights as plain data."""

from __future__ import annotations

from dataclasses import dataclass

from flux_pipeline.run.admission import (
    ALLOWANCE_START,
    ESTIMATE_CACHE_SECONDS,
    LEARN_WAVE_CAP,
    MARGIN_CEILING,
    MARGIN_FLOOR,
    MARGIN_START,
    MARGIN_STEP_ON_429,
    MARGIN_STEP_ON_SUCCESS,
    PAUSE_AFTER_429,
    SPECULATIVE_429_SHARE,
    Admission,
)
from flux_pipeline.run.scheduler import Durations


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Aged:
    started: float
    checked_age: float = 0.0


def learned(count: int, seconds: float = 10.0) -> Durations:
    """``count`` tasks seen, every one of them took exactly ``seconds``."""
    durations = Durations(size=max(count, 1))
    for _ in range(count):
        durations.add(seconds)
    return durations


def admission(max_active: int, durations: Durations, clock: FakeClock) -> Admission:
    return Admission(max_active=max_active, durations=durations, clock=clock)


def test_no_room_before_a_full_wave_is_learned() -> None:
    clock = FakeClock()
    overdue = [Aged(started=clock.now - 60.0) for _ in range(100)]  # surely finished
    few = admission(100, learned(99), clock)
    assert not few.may_speculate()
    assert few.room(lambda: overdue) == 0
    wave = admission(100, learned(100), clock)
    assert wave.may_speculate()
    assert wave.room(lambda: overdue) > 0


def test_a_wave_is_at_most_the_learning_cap() -> None:
    clock = FakeClock()
    big = admission(10_000, learned(LEARN_WAVE_CAP), clock)
    assert big.may_speculate()
    assert not admission(10_000, learned(LEARN_WAVE_CAP - 1), clock).may_speculate()


def test_disabled_admission_never_speculates() -> None:
    clock = FakeClock()
    off = Admission(max_active=10, durations=learned(10), clock=clock, enabled=False)
    assert off.room(lambda: [Aged(started=clock.now - 60.0)] * 10) == 0


def test_room_grows_with_expected_unseen_completions() -> None:
    clock = FakeClock()
    durations = Durations(size=1000)
    for i in range(1000):
        durations.add(1.0 + i / 100)  # 1 s .. 11 s, evenly
    rooms = []
    for age in (0.5, 4.0, 8.0, 12.0):
        clock.advance(ESTIMATE_CACHE_SECONDS * 2)
        model = admission(10_000, durations, clock)
        flights = [Aged(started=clock.now - age) for _ in range(1000)]
        rooms.append(model.room(lambda flights=flights: flights))  # type: ignore[misc]
    assert rooms[0] == 0  # younger than every task seen: none finished yet
    assert 200 < rooms[1] < rooms[2] < 700  # ~30% and ~70% of them, less the margin
    assert rooms[3] == 1000  # older than every task seen: all finished


def test_a_poll_that_saw_the_task_unfinished_counts_against_it() -> None:
    clock = FakeClock()
    durations = Durations(size=1000)
    for i in range(1000):
        durations.add(1.0 + i / 100)
    model = admission(1000, durations, clock)
    unseen = [Aged(started=clock.now - 6.0) for _ in range(500)]
    fresh = model.room(lambda: unseen)
    clock.advance(ESTIMATE_CACHE_SECONDS * 2)
    checked = [Aged(started=clock.now - 6.0, checked_age=5.9) for _ in range(500)]
    assert model.room(lambda: checked) < fresh


def test_the_cap_holds() -> None:
    clock = FakeClock()
    model = admission(50, learned(50), clock)
    flights = [Aged(started=clock.now - 60.0) for _ in range(10_000)]
    assert model.room(lambda: flights) == 50 // 10


def test_the_estimate_is_cached_briefly() -> None:
    clock = FakeClock()
    model = admission(100, learned(100), clock)
    calls = []

    def flights() -> list[Aged]:
        calls.append(clock.now)
        return [Aged(started=clock.now - 60.0)] * 100

    first = model.room(flights)
    clock.advance(ESTIMATE_CACHE_SECONDS / 2)
    assert model.room(flights) == first
    assert len(calls) == 1
    clock.advance(ESTIMATE_CACHE_SECONDS)
    model.room(flights)
    assert len(calls) == 2


def test_a_429_on_a_speculative_create_widens_the_margin_and_pauses() -> None:
    clock = FakeClock()
    model = admission(1000, learned(1000), clock)
    flights = [Aged(started=clock.now - 60.0)] * 1000
    assert model.margin == MARGIN_START
    model.rate_limited()
    assert model.margin == MARGIN_START + MARGIN_STEP_ON_429
    assert model.speculative_429s == 1
    assert not model.may_speculate()
    clock.advance(ESTIMATE_CACHE_SECONDS * 2)
    assert model.room(lambda: flights) == 0  # paused
    clock.advance(PAUSE_AFTER_429)
    assert model.may_speculate()
    assert model.room(lambda: flights) > 0
    for _ in range(100):
        model.rate_limited()
    assert model.margin == MARGIN_CEILING


def test_a_wider_margin_means_less_room() -> None:
    clock = FakeClock()
    durations = Durations(size=1000)
    for i in range(1000):
        durations.add(1.0 + i / 100)
    calm = admission(10_000, durations, clock)
    wary = admission(10_000, durations, clock)
    wary.rate_limited()
    clock.advance(PAUSE_AFTER_429)
    flights = [Aged(started=clock.now - 6.0) for _ in range(1000)]
    assert 0 < wary.room(lambda: flights) < calm.room(lambda: flights)


def test_successes_narrow_the_margin_slowly_down_to_the_floor() -> None:
    clock = FakeClock()
    model = admission(100, learned(100), clock)
    model.rate_limited()
    widened = model.margin
    model.succeeded()
    assert model.margin == widened - MARGIN_STEP_ON_SUCCESS
    assert widened - model.margin < MARGIN_STEP_ON_429 / 10  # slower than a 429 widens it
    for _ in range(10_000):
        model.succeeded()
    assert model.margin == MARGIN_FLOOR


def test_successes_narrow_the_margin_only_while_the_429s_are_within_their_allowance() -> None:
    """Speculation may spend ``SPECULATIVE_429_SHARE`` of the run's requests on 429s: past
    that, successes no longer narrow the margin, until enough requests have been sent."""
    clock = FakeClock()
    sent = [0]
    model = Admission(max_active=100, durations=learned(100), clock=clock, requests=lambda: sent[0])
    for _ in range(ALLOWANCE_START):
        model.rate_limited()
    spent = model.margin
    for _ in range(50):
        model.succeeded()
    assert model.margin == spent  # 3 429s and no request sent: the allowance is spent
    sent[0] = round(1 / SPECULATIVE_429_SHARE)  # one more 429 earned
    model.succeeded()
    assert model.margin == spent - MARGIN_STEP_ON_SUCCESS
    model.rate_limited()  # and spent again
    widened = model.margin
    model.succeeded()
    assert model.margin == widened
