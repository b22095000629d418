"""Synthetic bars: deterministic from (seed, symbol, day, index), sane, and breaking out."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from brokers.base import Bar
from brokers.sim import BarGenerator
from tests.unit.brokers._sim_kit import CALENDAR, DAY, bar_slot, generator

FIVE = ["AAPL", "MSFT", "NVDA", "AMD", "TSLA"]


def session(gen: BarGenerator, symbol: str, day: date, base: float = 100.0) -> list[Bar]:
    return [gen.bar(symbol, gen.slot_ts(day, i), base) for i in range(gen.slots)]


def trading_days(count: int, start: date = DAY) -> list[date]:
    days = [start]
    while len(days) < count:
        days.append(CALENDAR.next_day(days[-1]))
    return days


def test_same_seed_same_bars_across_generators() -> None:
    first, second = generator(seed=7), generator(seed=7)
    for day in trading_days(3):
        for symbol in FIVE:
            assert session(first, symbol, day) == session(second, symbol, day)


def test_a_bar_does_not_depend_on_which_bars_were_made_before() -> None:
    late = generator(seed=7).bar("AAPL", bar_slot(200, date(2026, 3, 4)), 100.0)
    gen = generator(seed=7)
    session(gen, "AAPL", DAY)
    assert gen.bar("AAPL", bar_slot(200, date(2026, 3, 4)), 100.0) == late


def test_different_seed_or_symbol_gives_different_bars() -> None:
    assert session(generator(seed=7), "AAPL", DAY) != session(generator(seed=8), "AAPL", DAY)
    gen = generator(seed=7)
    closes = {tuple(b.close for b in session(gen, s, DAY)) for s in FIVE}
    assert len(closes) == len(FIVE)


def test_first_open_of_origin_day_is_the_base_price() -> None:
    gen = generator()
    assert gen.bar("AAPL", bar_slot(0), 123.45).open == 123.45


@pytest.mark.parametrize("seed", [1, 7, 99])
def test_bars_are_consistent_continuous_and_positive(seed: int) -> None:
    gen = generator(seed=seed)
    for day in trading_days(10):
        bars = session(gen, "TSLA", day, base=3.0)
        for prev, bar in itertools.pairwise(bars):
            assert bar.open == prev.close
        for bar in bars:
            assert 0 < bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
            assert bar.volume > 0
            assert bar.ts.tzinfo is UTC


def test_prices_stay_in_a_band_around_the_base_for_a_year() -> None:
    gen = generator()
    closes = [session(gen, "NVDA", day)[-1].close for day in trading_days(250)]
    assert 50.0 < min(closes) < max(closes) < 200.0


def test_overnight_gaps_exist_and_stay_small() -> None:
    gen = generator()
    gaps = []
    for day in trading_days(40):
        close = session(gen, "AMD", day)[-1].close
        opening = gen.bar("AMD", gen.slot_ts(CALENDAR.next_day(day), 0), 100.0).open
        gaps.append(abs(opening / close - 1))
    assert max(gaps) < 0.05
    assert sum(g > 0.002 for g in gaps) >= 10


def _breakouts(bars: list[Bar], range_bars: int = 15, warmup: int = 20) -> int:
    """Closes that cross the opening range's high from below or its low from above."""
    high = max(b.high for b in bars[:range_bars])
    low = min(b.low for b in bars[:range_bars])
    count = 0
    for prev, bar in zip(bars[warmup - 1 :], bars[warmup:], strict=False):
        count += prev.close <= high < bar.close
        count += prev.close >= low > bar.close
    return count


def test_opening_range_breakouts_happen_several_times_a_session() -> None:
    gen = generator()
    per_session = [sum(_breakouts(session(gen, s, day)) for s in FIVE) for day in trading_days(20)]
    assert min(per_session) >= 5
    assert sum(per_session) / len(per_session) >= 15


def test_session_grid() -> None:
    gen = generator()
    friday = date(2026, 1, 9)
    last = gen.slot_ts(friday, gen.slots - 1)

    assert gen.slots == 390
    assert gen.slot_of(last) == (friday, 389)
    assert gen.next_slot(last) == CALENDAR.open_of(date(2026, 1, 12))
    assert gen.first_slot_at_or_after(last + timedelta(seconds=1)) == CALENDAR.open_of(
        date(2026, 1, 12)
    )
    assert gen.first_slot_at_or_after(datetime(2026, 1, 10, 12, tzinfo=UTC)) == CALENDAR.open_of(
        date(2026, 1, 12)
    )
    assert gen.first_slot_at_or_after(datetime(2026, 1, 9, 6, tzinfo=UTC)) == CALENDAR.open_of(
        friday
    )
    assert gen.first_slot_at_or_after(bar_slot(5)) == bar_slot(5)
    with pytest.raises(ValueError, match="outside regular hours"):
        gen.slot_of(datetime(2026, 1, 10, 15, tzinfo=UTC))


def test_bar_size_must_divide_the_session() -> None:
    with pytest.raises(ValueError, match="must divide"):
        BarGenerator(seed=1, bar_seconds=7 * 60, calendar=CALENDAR, origin=DAY)
    assert BarGenerator(seed=1, bar_seconds=1800, calendar=CALENDAR, origin=DAY).slots == 13
