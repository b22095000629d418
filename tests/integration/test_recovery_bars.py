"""Bars after downtime: stale ones dropped, the gap refilled from broker history (no warm-up)."""

from __future__ import annotations

import functools
import itertools
from datetime import datetime, timedelta
from pathlib import Path

from brokers.base import Bar, BrokerEvent
from brokers.sim import SimBroker
from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    BAR,
    SYMBOL,
    Trader,
    crash_in,
    open_venue,
    open_venue_as,
    print_bars,
    stored_ring,
    until,
    write_profile,
)


def _ring_times(state_dir: Path) -> list[float]:
    return [bar.ts.timestamp() for bar in stored_ring(state_dir)]


async def test_gap_while_down_is_refilled_from_history(tmp_path: Path) -> None:
    profile, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await crash_in("open", state, profile)
    before = _ring_times(state)
    assert before

    # While the trader is down, 40 bars print at the venue.
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await venue.connect()
    await print_bars(venue, clock, 40)
    market_now = venue.now()
    await venue.close()

    venue = await open_venue(config, state, VirtualClock())  # the market stands still
    async with Trader(config, state, venue) as trader:
        ring = trader.app.actors[SYMBOL].bars
        times = [bar.ts.timestamp() for bar in ring]
    assert times[-1] > before[-1], "bars printed while down are in the buffer"
    newest_due = market_now - timedelta(seconds=BAR)
    assert times[-1] >= newest_due.timestamp() - BAR
    # No hole: from the last bar seen before the crash on, every bar slot is present.
    since = [t for t in times if t >= before[-1]]
    assert all(b - a == BAR for a, b in itertools.pairwise(since)), since
    assert len(since) >= 40
    assert len(ring) <= config.runtime.bar_buffer


class _BarAfterRefillVenue(SimBroker):
    """The sim venue where, once armed, a bar completes just after the trader's refill
    of ``SYMBOL`` read its history: the race between the refill at boot and the stream.
    The refill waits until the venue has handed that bar to its stream (or dropped it,
    for a symbol nobody subscribed to), as a remote venue streams a bar when it prints."""

    clock: VirtualClock | None = None
    late: Bar | None = None

    @functools.cached_property
    def published(self) -> list[Bar]:
        return []

    def _publish(self, events: list[BrokerEvent]) -> None:
        super()._publish(events)
        self.published.extend(e for e in events if isinstance(e, Bar) and e.symbol == SYMBOL)

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        bars = await super().history(symbol, start, end)
        clock = self.clock
        if clock is not None and symbol == SYMBOL:
            self.clock = None
            seen = len(self.published)
            await clock.advance(BAR)
            await until(lambda: len(self.published) > seen, "the venue to print the next bar")
            self.late = self.published[-1]
        return bars


async def test_a_bar_that_completes_during_boot_recovery_is_not_lost(tmp_path: Path) -> None:
    """The boot refills the buffer from history, then streams bars. A bar completing
    between the two is in the buffer once the trader runs, with no hole before it:
    the stream is subscribed before the refill, and the buffer drops what it holds."""
    profile, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await crash_in("open", state, profile)
    clock = VirtualClock()
    venue = await open_venue_as(_BarAfterRefillVenue, config, state, clock)
    await venue.connect()
    await print_bars(venue, clock, 5)  # printed while the trader is down: a gap to refill
    await venue.close()

    venue = await open_venue_as(_BarAfterRefillVenue, config, state, clock)
    venue.clock = clock
    async with Trader(config, state, venue) as trader:
        ring = trader.app.actors[SYMBOL].bars
        late = venue.late
        assert late is not None, "the refill ran and a bar completed after it"

        await until(lambda: ring.last_ts() >= late.ts.timestamp(), "the late bar", within=3.0)

        times = [bar.ts.timestamp() for bar in ring]
        assert times[-1] == late.ts.timestamp()
        assert all(b - a == BAR for a, b in itertools.pairwise(times[-5:])), times[-5:]
