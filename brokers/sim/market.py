"""The venue's market clock: regular-hours time that runs ``speed`` times real time.

The sim venue trades only in regular hours, so its clock lives on a *session
line*: the regular sessions of the calendar laid end to end. Advancing the clock
moves along that line, so 16:00 on a Friday is followed at once by 09:30 on
Monday and a paper session trades whatever the wall-clock time is. The clock is
anchored to a market time (loaded from the venue's book) and a reading of an
injected monotonic function, so tests drive it by moving that function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

from runtime.clock import TradingCalendar, utc

__all__ = [
    "MarketClock",
    "advance",
    "local_day",
    "regular_seconds_between",
    "session_floor",
]


def local_day(calendar: TradingCalendar, ts: datetime) -> date:
    """Return the exchange-local calendar date of ``ts``."""
    return utc(ts).astimezone(calendar.zone).date()


def session_floor(calendar: TradingCalendar, ts: datetime) -> datetime:
    """Return ``ts`` when it is in regular hours, else the next regular open after it."""
    if calendar.is_regular_hours(ts):
        return utc(ts)
    day = local_day(calendar, ts)
    if day.weekday() < 5 and utc(ts) < calendar.open_of(day):
        return calendar.open_of(day)
    return calendar.open_of(calendar.next_day(day))


def advance(calendar: TradingCalendar, ts: datetime, seconds: float) -> datetime:
    """Move ``seconds`` of regular-hours time forward from ``ts``.

    The result is always in regular hours: reaching a close lands on the next open.
    """
    ts = session_floor(calendar, ts)
    remaining = max(0.0, seconds)
    while True:
        close = calendar.close_of(local_day(calendar, ts))
        room = (close - ts).total_seconds()
        if remaining < room:
            return ts + timedelta(seconds=remaining)
        remaining -= room
        ts = calendar.open_of(calendar.next_day(local_day(calendar, ts)))


def regular_seconds_between(calendar: TradingCalendar, start: datetime, end: datetime) -> float:
    """Return the regular-hours seconds from ``start`` to ``end`` (0 when ``end`` is earlier)."""
    ts = session_floor(calendar, start)
    end = utc(end)
    total = 0.0
    while ts < end:
        close = calendar.close_of(local_day(calendar, ts))
        if end <= close:
            return total + (end - ts).total_seconds()
        total += (close - ts).total_seconds()
        ts = calendar.open_of(calendar.next_day(local_day(calendar, ts)))
    return total


class MarketClock:
    """Market time that advances ``speed`` times an injected monotonic function.

    It never runs backwards, also not across a pause, and never leaves regular hours.
    """

    def __init__(
        self,
        calendar: TradingCalendar,
        start: datetime,
        *,
        speed: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self._calendar = calendar
        self._speed = speed
        self._monotonic = monotonic
        self._anchor = session_floor(calendar, start)
        self._anchor_mono = monotonic()
        self._paused = False
        self._last = self._anchor
        self._session: tuple[datetime, datetime, float] | None = None  # see _within_session

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def now(self) -> datetime:
        """Return the market time (aware UTC)."""
        if not self._paused:
            # Rounded to the microsecond so that deadline() is exact despite float error.
            elapsed = round((self._monotonic() - self._anchor_mono) * self._speed, 6)
            ts = self._within_session(elapsed)
            if ts is None:
                ts = advance(self._calendar, self._anchor, elapsed)
                self._reanchor(ts)
            if ts > self._last:
                self._last = ts
        return self._last

    def _within_session(self, elapsed: float) -> datetime | None:
        """Return ``advance(anchor, elapsed)`` when it stays in the anchor's session, else None.

        Every actor reads the clock on every event, so the common case (still in
        the session the anchor is in) is one addition, not a walk over the
        calendar's time zones; it is the same arithmetic ``advance`` does then.
        """
        session = self._session
        if session is None or session[0] is not self._anchor:
            floor = session_floor(self._calendar, self._anchor)
            room = self._calendar.close_of(local_day(self._calendar, floor)) - floor
            session = (self._anchor, floor, room.total_seconds())
            self._session = session
        _, floor, room_s = session
        if max(0.0, elapsed) < room_s:
            return floor + timedelta(seconds=max(0.0, elapsed))
        return None

    def _reanchor(self, ts: datetime) -> None:
        """Move the anchor to the open of ``ts``'s day, on the same time line.

        Keeps ``now()`` and ``deadline()`` from walking every session since the
        clock was created; the shift is exact up to float error far below the
        microsecond rounding.
        """
        day = local_day(self._calendar, ts)
        if day == local_day(self._calendar, self._anchor):
            return
        day_open = self._calendar.open_of(day)
        passed = regular_seconds_between(self._calendar, self._anchor, day_open)
        self._anchor_mono += passed / self._speed
        self._anchor = day_open

    def pause(self) -> None:
        """Freeze market time until ``resume()``."""
        if not self._paused:
            self._anchor = self.now()
            self._paused = True

    def resume(self) -> None:
        """Let market time run again from where it was frozen."""
        if self._paused:
            self._anchor = self._last
            self._anchor_mono = self._monotonic()
            self._paused = False

    def deadline(self, ts: datetime) -> float | None:
        """Return the monotonic reading at which market time reaches ``ts`` (``None`` if paused).

        It is exact: once the monotonic function reads at least this, ``now() >= ts``.
        """
        if self._paused:
            return None
        return (
            self._anchor_mono
            + regular_seconds_between(self._calendar, self._anchor, ts) / self._speed
        )
