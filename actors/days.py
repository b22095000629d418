"""Which trading day and regular session a bar belongs to, computed once per day.

``TradingCalendar.trading_day`` converts through the exchange's time zone, and
the session's open and close are two more conversions: a few microseconds that
every bar of every symbol would pay. A trading day is a half-open span of POSIX
seconds (from its session start to the next trading day's), so one float
comparison tells whether a bar is still in the day seen last; the span and its
``Session`` are computed once per (calendar, day, bar length) and shared by
every actor, which also lets the strategy cache its per-session cut-offs.
"""

from __future__ import annotations

import weakref
from datetime import date, datetime

from actors.strategy import Session
from runtime.clock import TradingCalendar

__all__ = ["TradingDay", "session_start", "trading_day_of"]


class TradingDay:
    """One trading day: ``start <= ts < end`` (POSIX seconds) and its regular session."""

    __slots__ = ("day", "end", "session", "start")

    def __init__(self, day: date, start: float, end: float, session: Session) -> None:
        self.day = day
        self.start = start
        self.end = end
        self.session = session


_days: weakref.WeakKeyDictionary[TradingCalendar, dict[tuple[date, int], TradingDay]] = (
    weakref.WeakKeyDictionary()
)


def trading_day_of(calendar: TradingCalendar, ts: datetime, bar_seconds: int) -> TradingDay:
    """Return the trading day holding ``ts``; raise ``ValueError`` when ``ts`` is naive."""
    day = calendar.trading_day(ts)
    known = _days.setdefault(calendar, {})
    found = known.get((day, bar_seconds))
    if found is None:
        start = calendar.local(day, calendar.session_start).timestamp()
        end = calendar.local(calendar.next_day(day), calendar.session_start).timestamp()
        session = Session(
            open=calendar.open_of(day), close=calendar.close_of(day), bar_seconds=bar_seconds
        )
        found = known[(day, bar_seconds)] = TradingDay(day, start, end, session)
    return found


_starts: weakref.WeakKeyDictionary[TradingCalendar, dict[date, datetime]] = (
    weakref.WeakKeyDictionary()
)


def session_start(calendar: TradingCalendar, day: date) -> datetime:
    """Return when trading day ``day`` begins (``calendar.local(day, calendar.session_start)``).

    Computed once per (calendar, day): every actor's checkpoint mark at boot reads it.
    """
    known = _starts.setdefault(calendar, {})
    found = known.get(day)
    if found is None:
        found = known[day] = calendar.local(day, calendar.session_start)
    return found
