"""Bars after downtime: stale ones dropped, the gap refilled from broker history (no warm-up)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path

from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    BAR,
    SYMBOL,
    Trader,
    crash_in,
    open_venue,
    print_bars,
    stored_ring,
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
