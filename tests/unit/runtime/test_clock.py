"""Clock and trading calendar: injected time, trading days from a timezone and session start."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from runtime.clock import FunctionClock, TradingCalendar, VirtualClock, posix, utc

NY = TradingCalendar("America/New_York", time(4, 0))


@pytest.mark.parametrize(
    ("ts", "day"),
    [
        (datetime(2026, 1, 5, 14, 30, tzinfo=UTC), date(2026, 1, 5)),  # Mon 09:30 NY
        (datetime(2026, 1, 5, 8, 59, tzinfo=UTC), date(2026, 1, 2)),  # Mon 03:59 NY -> Fri
        (datetime(2026, 1, 5, 9, 0, tzinfo=UTC), date(2026, 1, 5)),  # Mon 04:00 NY
        (datetime(2026, 1, 6, 4, 0, tzinfo=UTC), date(2026, 1, 5)),  # Mon 23:00 NY
        (datetime(2026, 1, 10, 15, 0, tzinfo=UTC), date(2026, 1, 9)),  # Saturday -> Friday
        (datetime(2026, 7, 6, 8, 30, tzinfo=UTC), date(2026, 7, 6)),  # Mon 04:30 EDT
        (datetime(2026, 7, 6, 7, 30, tzinfo=UTC), date(2026, 7, 3)),  # Mon 03:30 EDT -> Fri
    ],
)
def test_trading_day_follows_the_exchange_timezone_and_session_start(
    ts: datetime, day: date
) -> None:
    assert NY.trading_day(ts) == day


def test_regular_session_in_utc_across_daylight_saving() -> None:
    assert NY.open_of(date(2026, 1, 5)) == datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    assert NY.close_of(date(2026, 7, 6)) == datetime(2026, 7, 6, 20, 0, tzinfo=UTC)
    assert NY.next_day(date(2026, 1, 9)) == date(2026, 1, 12)
    assert NY.is_regular_hours(datetime(2026, 1, 5, 15, 0, tzinfo=UTC))
    assert not NY.is_regular_hours(datetime(2026, 1, 5, 21, 0, tzinfo=UTC))
    assert not NY.is_regular_hours(datetime(2026, 1, 10, 15, 0, tzinfo=UTC))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        utc(datetime(2026, 1, 5, 10, 0))
    with pytest.raises(ValueError, match="naive datetime"):
        NY.trading_day(datetime(2026, 1, 5, 10, 0))


def test_posix_is_timestamp_whatever_came_before() -> None:
    zone = ZoneInfo("America/New_York")
    first, second = (datetime(2026, 11, 1, 1, 30, tzinfo=zone, fold=f) for f in (0, 1))
    assert first == second  # one zone: the fold is ignored, yet they are an hour apart
    noon = datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
    times = [
        noon,
        noon,
        noon.astimezone(timezone(timedelta(hours=-5))),  # the same instant
        noon + timedelta(minutes=1),
        first,
        second,
        first,
        datetime(2026, 1, 5, 12, 0),  # naive: local time
    ]

    assert [posix(t) for t in times] == [t.timestamp() for t in times]


async def test_virtual_clock_wakes_sleepers_in_order_only_when_advanced() -> None:
    clock = VirtualClock(datetime(2026, 1, 5, 14, 30, tzinfo=UTC))
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper("late", 10))
        group.create_task(sleeper("early", 5))
        await asyncio.sleep(0)
        await clock.advance(4)
        assert woke == []
        await clock.advance(1)
        assert woke == ["early"]
        await clock.advance(5)
    assert woke == ["early", "late"]
    assert clock.monotonic() == 10
    assert clock.now() == datetime(2026, 1, 5, 14, 30, 10, tzinfo=UTC)


def test_function_clock_takes_market_time_from_the_venue() -> None:
    market = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    clock = FunctionClock(lambda: market)
    assert clock.now() == market
