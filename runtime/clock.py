"""Time, injected: nothing else in the runtime reads the wall clock.

Two notions of time live here. ``now()`` is *market* time (UTC), the time that
stamps fills, bars and trading days; on the sim venue it is the venue's own
clock, on a real broker the wall clock. ``monotonic()`` and ``sleep()`` are the
*runtime's* time, used for timers such as the checkpoint interval. A virtual
clock drives both by hand so tests never sleep for a guess of time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Protocol
from zoneinfo import ZoneInfo

__all__ = [
    "Clock",
    "FunctionClock",
    "RealClock",
    "TradingCalendar",
    "VirtualClock",
    "posix",
    "utc",
]


def utc(ts: datetime) -> datetime:
    """Return ``ts`` as an aware UTC datetime; raise ``ValueError`` when naive."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()} (times must carry a timezone)")
    return ts.astimezone(UTC)


def _last_conversion() -> Callable[[datetime], float]:
    # The bars of one minute share their time across symbols, and a bar's time
    # is read by the actor and again by its strategy: remembering the last
    # conversion turns most of them into one comparison. Only fixed-offset
    # times (UTC) are remembered: two times of one zone compare equal across a
    # DST fold (their ``fold`` is ignored) though they are an hour apart.
    # One tuple, swapped whole: a reader on another thread never pairs a time
    # with another time's conversion.
    last: tuple[datetime | None, float] = (None, 0.0)

    def posix(when: datetime) -> float:
        """Return ``when.timestamp()``."""
        nonlocal last
        last_when, last_ts = last
        if when == last_when:
            return last_ts
        ts = when.timestamp()
        if type(when.tzinfo) is timezone:
            last = (when, ts)
        return ts

    return posix


posix = _last_conversion()


class Clock(Protocol):
    def now(self) -> datetime:
        """Return market time, aware UTC."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FunctionClock(RealClock):
    """Real timers, market time from a function (the sim venue's market clock)."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now()


class VirtualClock:
    """A clock that moves only when told to: ``advance()`` wakes due sleepers."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = utc(start) if start else datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._counter), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper that becomes due, in order."""
        target = self._elapsed + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, fut = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, due)
            if not fut.done():
                fut.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._elapsed = target
        await asyncio.sleep(0)


class TradingCalendar:
    """Trading days from an exchange timezone and a session start.

    A timestamp before the session start (local time) belongs to the previous
    trading day; weekends roll back to Friday. Holidays are not modelled: a
    holiday only costs a day-scoped reset that nothing trades against.
    """

    def __init__(
        self,
        timezone: str = "America/New_York",
        session_start: dtime = dtime(4, 0),
        regular_open: dtime = dtime(9, 30),
        regular_close: dtime = dtime(16, 0),
    ) -> None:
        self.zone = ZoneInfo(timezone)
        self.session_start = session_start
        self.regular_open = regular_open
        self.regular_close = regular_close

    def trading_day(self, ts: datetime) -> date:
        local = utc(ts).astimezone(self.zone)
        day = local.date()
        if local.time() < self.session_start:
            day -= timedelta(days=1)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        return day

    def local(self, day: date, at: dtime) -> datetime:
        """Return ``day`` at local time ``at``, as UTC."""
        return datetime.combine(day, at, tzinfo=self.zone).astimezone(UTC)

    def open_of(self, day: date) -> datetime:
        return self.local(day, self.regular_open)

    def close_of(self, day: date) -> datetime:
        return self.local(day, self.regular_close)

    def next_day(self, day: date) -> date:
        nxt = day + timedelta(days=1)
        while nxt.weekday() >= 5:
            nxt += timedelta(days=1)
        return nxt

    def is_regular_hours(self, ts: datetime) -> bool:
        local = utc(ts).astimezone(self.zone)
        if local.weekday() >= 5:
            return False
        return self.regular_open <= local.time() < self.regular_close
