"""The market clock of a local exchange, as a client extrapolates it between polls.

A real Alpaca account trades on the wall clock. The local exchange runs its
own market time (``speed`` times real time, regular hours only, frozen when the
market is stopped) and tells it at ``/_sim/clock``. Between polls the adapter
extrapolates at ``speed``, never past the session's close (the exchange jumps
from the close to the next open, which the next poll brings) and never
backwards, so a position's time line is monotonic whatever the polls say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["VenueClock"]


class VenueClock:
    """Market time of a remote venue; ``now()`` is ``None`` until the first ``update``."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._anchor: datetime | None = None
        self._anchor_mono = 0.0
        self._speed = 1.0
        self._running = True
        self._close: datetime | None = None
        self._last: datetime | None = None

    @property
    def synced(self) -> bool:
        return self._anchor is not None

    def update(self, ts: datetime, *, speed: float, running: bool, close: datetime) -> None:
        """Take a reading of the venue's clock (``close``: the end of the current session)."""
        self._anchor = ts
        self._anchor_mono = self._monotonic()
        self._speed = speed
        self._running = running
        self._close = close

    def now(self) -> datetime | None:
        """Return the extrapolated market time (``None`` before the first reading)."""
        if self._anchor is None:
            return None
        ts = self._anchor
        if self._running:
            elapsed = (self._monotonic() - self._anchor_mono) * self._speed
            ts = ts + timedelta(seconds=elapsed)
            if self._close is not None and ts > self._close:
                ts = max(self._anchor, self._close)
        if self._last is not None and ts < self._last:
            return self._last
        self._last = ts
        return ts
