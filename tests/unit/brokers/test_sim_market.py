"""The venue's market clock: regular hours only, speed times an injected monotonic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokers.sim import MarketClock
from brokers.sim.market import advance, regular_seconds_between, session_floor
from tests.unit.brokers._sim_kit import CALENDAR, OPEN

FRIDAY_CLOSE = datetime(2026, 1, 9, 21, 0, tzinfo=UTC)  # 16:00 New York
MONDAY_OPEN = datetime(2026, 1, 12, 14, 30, tzinfo=UTC)


class FakeMonotonic:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def test_session_floor() -> None:
    assert session_floor(CALENDAR, OPEN + timedelta(hours=1)) == OPEN + timedelta(hours=1)
    assert session_floor(CALENDAR, OPEN - timedelta(hours=3)) == OPEN
    assert session_floor(CALENDAR, FRIDAY_CLOSE) == MONDAY_OPEN
    assert session_floor(CALENDAR, datetime(2026, 1, 11, 3, tzinfo=UTC)) == MONDAY_OPEN


def test_advance_skips_nights_and_weekends() -> None:
    assert advance(CALENDAR, OPEN, 60) == OPEN + timedelta(minutes=1)
    assert advance(CALENDAR, OPEN, 6.5 * 3600) == OPEN + timedelta(days=1)
    assert advance(CALENDAR, FRIDAY_CLOSE - timedelta(minutes=1), 120) == MONDAY_OPEN + timedelta(
        minutes=1
    )
    assert advance(CALENDAR, OPEN, 5 * 6.5 * 3600) == MONDAY_OPEN


@given(
    start=st.integers(min_value=0, max_value=30 * 24 * 3600),
    seconds=st.integers(min_value=0, max_value=20 * 23400),
)
def test_regular_seconds_between_inverts_advance(start: int, seconds: int) -> None:
    origin = session_floor(CALENDAR, OPEN + timedelta(seconds=start))
    end = advance(CALENDAR, origin, seconds)
    assert CALENDAR.is_regular_hours(end)
    assert regular_seconds_between(CALENDAR, origin, end) == seconds


def test_clock_runs_speed_times_the_monotonic_and_skips_the_night() -> None:
    mono = FakeMonotonic()
    clock = MarketClock(CALENDAR, OPEN, speed=60.0, monotonic=mono)

    mono.value += 1.0
    assert clock.now() == OPEN + timedelta(minutes=1)
    mono.value += 390.0  # one regular session later
    assert clock.now() == OPEN + timedelta(days=1, minutes=1)


def test_clock_starting_off_hours_starts_at_the_next_open() -> None:
    clock = MarketClock(
        CALENDAR, FRIDAY_CLOSE + timedelta(hours=2), speed=1.0, monotonic=lambda: 0.0
    )
    assert clock.now() == MONDAY_OPEN


def test_clock_never_runs_backwards_and_pauses() -> None:
    mono = FakeMonotonic()
    clock = MarketClock(CALENDAR, OPEN, speed=10.0, monotonic=mono)
    mono.value += 6.0
    seen = clock.now()
    mono.value -= 3.0  # a misbehaving monotonic
    assert clock.now() == seen

    clock.pause()
    mono.value += 100.0
    assert clock.now() == seen
    assert clock.deadline(seen + timedelta(minutes=1)) is None
    clock.resume()
    mono.value += 6.0
    assert clock.now() == seen + timedelta(minutes=1)


@given(minutes=st.integers(min_value=1, max_value=5000), speed=st.sampled_from([1.0, 60.0, 7.3]))
def test_deadline_is_exact(minutes: int, speed: float) -> None:
    mono = FakeMonotonic()
    clock = MarketClock(CALENDAR, OPEN, speed=speed, monotonic=mono)
    target = advance(CALENDAR, OPEN, minutes * 60)
    deadline = clock.deadline(target)
    assert deadline is not None
    mono.value = deadline
    assert clock.now() == target


def test_clock_stays_exact_over_many_sessions() -> None:
    mono = FakeMonotonic()
    clock = MarketClock(CALENDAR, OPEN, speed=60.0, monotonic=mono)
    last = (0.0, OPEN)
    for session in range(1, 300):
        mono.value += 390.0  # one regular session of market time
        expected = advance(CALENDAR, OPEN, session * 23400)
        assert clock.now() == expected
        target = expected + timedelta(minutes=7)
        deadline = clock.deadline(target)
        assert deadline is not None
        assert deadline == pytest.approx(mono.value + 7.0)
        last = (deadline, target)
    mono.value = last[0]
    assert clock.now() == last[1]


@given(
    start=st.integers(min_value=-3 * 3600, max_value=8 * 24 * 3600),
    steps=st.lists(st.floats(min_value=0.0, max_value=9 * 3600.0), min_size=1, max_size=8),
    speed=st.sampled_from([1.0, 7.5, 60.0]),
)
def test_clock_reads_as_advancing_from_its_start(
    start: int, steps: list[float], speed: float
) -> None:
    mono = FakeMonotonic()
    origin = OPEN + timedelta(seconds=start)
    clock = MarketClock(CALENDAR, origin, speed=speed, monotonic=mono)
    floor = session_floor(CALENDAR, origin)
    elapsed = 0.0
    for step in steps:
        mono.value += step
        elapsed += step
        expected = advance(CALENDAR, floor, round(elapsed * speed, 6))
        assert abs((clock.now() - expected).total_seconds()) < 1e-5
