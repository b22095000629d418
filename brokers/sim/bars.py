"""Seeded synthetic bars: a pure function of (seed, symbol, trading day, bar index).

Nothing is drawn from a random generator that lives across calls, so the venue
keeps no generator state on disk and ``history()`` can regenerate any bar. A day
is built at once (and cached) from a generator seeded with a hash of
(seed, symbol, day): a random walk whose volatility is U-shaped over the session,
with *trend bursts* (a regime with drift) so that price leaves its opening range
several times a session. The day's opening level comes from smooth value noise
over days plus a daily jitter, so consecutive days gap and prices stay within a
band around the symbol's base price, always > 0.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import NamedTuple

from brokers.base import Bar
from brokers.sim.market import local_day
from runtime.clock import TradingCalendar, utc

__all__ = ["BarGenerator", "RawBar", "round_price"]

_MIN_PRICE = 0.0001
_SIGMA_PER_MINUTE = 0.0007
_TREND_START_PER_MINUTE = 0.03
_TREND_END_PER_MINUTE = 0.05


class RawBar(NamedTuple):
    """One generated bar before a symbol's base price and price adjustments."""

    open: float
    high: float
    low: float
    close: float
    volume: float


def round_price(price: float) -> float:
    """Round to a tick: cents at or above 1, 1/100 cent below; never below 0.0001."""
    return max(_MIN_PRICE, round(price, 2) if price >= 1.0 else round(price, 4))


def _hash64(*parts: object) -> int:
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    """A uniform number in [-1, 1) from a hash of ``parts``."""
    return _hash64(*parts) / 2**63 - 1.0


def _value_noise(seed: int, symbol: str, period: int, ordinal: int) -> float:
    cell, offset = divmod(ordinal, period)
    a = _unit(seed, symbol, "level", period, cell)
    b = _unit(seed, symbol, "level", period, cell + 1)
    t = offset / period
    t = t * t * (3 - 2 * t)
    return a + (b - a) * t


def _trend_level(seed: int, symbol: str, day: date) -> float:
    """Smooth log price level of ``day`` relative to the base price (before anchoring)."""
    n = day.toordinal()
    return (
        0.04 * _value_noise(seed, symbol, 5, n)
        + 0.08 * _value_noise(seed, symbol, 23, n)
        + 0.12 * _value_noise(seed, symbol, 71, n)
    )


def _open_level(seed: int, symbol: str, day: date) -> float:
    """Log level of ``day``'s open: the smooth level plus an overnight gap."""
    return _trend_level(seed, symbol, day) + 0.015 * _unit(seed, symbol, "gap", day.toordinal())


def _per_bar(rate_per_minute: float, bar_seconds: int) -> float:
    return 1.0 - math.pow(1.0 - rate_per_minute, bar_seconds / 60.0)


def _day_path(
    seed: int, symbol: str, day: date, slots: int, bar_seconds: int, target: float
) -> tuple[RawBar, ...]:
    """The day's bars relative to an open of 1.0, drifting towards log level ``target``.

    The pull towards the next day's level grows over the session (a loose bridge),
    so the overnight gap stays small while the day itself trends freely.
    """
    rng = random.Random(_hash64(seed, symbol, "day", day.isoformat(), bar_seconds))
    sigma = _SIGMA_PER_MINUTE * math.sqrt(bar_seconds / 60.0)
    p_start = _per_bar(_TREND_START_PER_MINUTE, bar_seconds)
    p_end = _per_bar(_TREND_END_PER_MINUTE, bar_seconds)
    drift = 0.0
    level = 0.0
    bars: list[RawBar] = []
    for k in range(slots):
        t = k / slots
        shape = 1.0 + 0.9 * math.exp(-t / 0.05) + 0.35 * math.exp(-(1.0 - t) / 0.05)
        if drift == 0.0:
            if rng.random() < p_start:
                drift = rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 1.3) * sigma
        elif rng.random() < p_end:
            drift = 0.0
        vol = sigma * shape * (1.3 if drift else 1.0)
        pull = (0.002 + 0.08 * t**4) * (target * t - level)
        step = drift + pull + rng.normalvariate(0.0, vol)
        open_ = math.exp(level)
        level += step
        close = math.exp(level)
        high = max(open_, close) * math.exp(abs(rng.normalvariate(0.0, 0.5 * vol)))
        low = min(open_, close) * math.exp(-abs(rng.normalvariate(0.0, 0.5 * vol)))
        volume = 1000.0 * shape * (1.8 if drift else 1.0) * rng.lognormvariate(0.0, 0.4)
        bars.append(RawBar(open_, high, low, close, float(round(volume))))
    return tuple(bars)


@functools.lru_cache(maxsize=1024)
def _anchored_day(
    seed: int, symbol: str, day: date, origin: date, slots: int, bar_seconds: int
) -> tuple[RawBar, ...]:
    """The day's bars for a base price of 1.0 (the first open of ``origin``)."""
    level = _open_level(seed, symbol, day)
    target = _trend_level(seed, symbol, _next_weekday(day)) - level
    scale = math.exp(level - _open_level(seed, symbol, origin))
    return tuple(
        RawBar(b.open * scale, b.high * scale, b.low * scale, b.close * scale, b.volume)
        for b in _day_path(seed, symbol, day, slots, bar_seconds, target)
    )


def _next_weekday(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


class BarGenerator:
    """Deterministic bars on the session grid: ``bar_seconds`` slots from each regular open.

    ``origin`` is the day whose first open equals a symbol's base price exactly.
    """

    def __init__(
        self, *, seed: int, bar_seconds: int, calendar: TradingCalendar, origin: date
    ) -> None:
        session = (calendar.close_of(origin) - calendar.open_of(origin)).total_seconds()
        if bar_seconds <= 0 or session % bar_seconds:
            raise ValueError(
                f"bar_seconds {bar_seconds} must divide the regular session ({session:.0f} s)"
            )
        self.seed = seed
        self.bar_seconds = bar_seconds
        self.calendar = calendar
        self.origin = origin
        self.slots = int(session // bar_seconds)

    def slot_ts(self, day: date, index: int) -> datetime:
        """Return the open time of bar ``index`` of ``day``."""
        return self.calendar.open_of(day) + timedelta(seconds=index * self.bar_seconds)

    def slot_of(self, ts: datetime) -> tuple[date, int]:
        """Return (day, index) of the bar slot containing ``ts``; raise ``ValueError`` off hours."""
        if not self.calendar.is_regular_hours(ts):
            raise ValueError(f"{utc(ts).isoformat()} is outside regular hours")
        day = local_day(self.calendar, ts)
        offset = (utc(ts) - self.calendar.open_of(day)).total_seconds()
        return day, int(offset // self.bar_seconds)

    def next_slot(self, ts: datetime) -> datetime:
        """Return the open time of the bar after the one that opens at ``ts``."""
        day, index = self.slot_of(ts)
        if index + 1 < self.slots:
            return self.slot_ts(day, index + 1)
        return self.calendar.open_of(self.calendar.next_day(day))

    def first_slot_at_or_after(self, ts: datetime) -> datetime:
        """Return the open time of the first bar that opens at or after ``ts``."""
        if not self.calendar.is_regular_hours(ts):
            day = local_day(self.calendar, ts)
            if day.weekday() < 5 and utc(ts) < self.calendar.open_of(day):
                return self.calendar.open_of(day)
            return self.calendar.open_of(self.calendar.next_day(day))
        day, index = self.slot_of(ts)
        start = self.slot_ts(day, index)
        return start if start == utc(ts) else self.next_slot(start)

    def raw(self, symbol: str, ts: datetime) -> RawBar:
        """Return the bar opening at ``ts`` for a base price of 1.0."""
        day, index = self.slot_of(ts)
        return _anchored_day(self.seed, symbol, day, self.origin, self.slots, self.bar_seconds)[
            index
        ]

    def bar(self, symbol: str, ts: datetime, price_scale: float) -> Bar:
        """Return the bar opening at ``ts``, scaled by ``price_scale`` and rounded to ticks."""
        raw = self.raw(symbol, ts)
        return Bar(
            symbol=symbol,
            ts=utc(ts),
            open=round_price(raw.open * price_scale),
            high=round_price(raw.high * price_scale),
            low=round_price(raw.low * price_scale),
            close=round_price(raw.close * price_scale),
            volume=raw.volume,
        )

    def bars_between(
        self,
        symbol: str,
        start: datetime,
        stop: datetime,
        scale_of: Callable[[datetime], float],
        *,
        limit: int,
    ) -> list[Bar]:
        """Return up to ``limit`` bars opening in ``[start, stop)``, scaled by ``scale_of(ts)``."""
        bars: list[Bar] = []
        ts = self.first_slot_at_or_after(start)
        while ts < stop and len(bars) < limit:
            bars.append(self.bar(symbol, ts, scale_of(ts)))
            ts = self.next_slot(ts)
        return bars
