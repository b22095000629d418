"""A broker that reports no positions: restored positions are unverified until confirmed.

The sim venue plays such a broker (a DTC server that sends no positions): its
orders and executions are real, its position report is empty. An unverified
position trades nothing (no partial, no stop move, no restore) until an
operator runs ``stalwart confirm SYMBOL``; the confirmation is a file in the
state dir, so it holds across restarts, for that one position.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from actors.messages import GetState
from brokers.sim import SimBroker
from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    OTHER,
    PIVOT,
    SYMBOL,
    BlindVenue,
    TimerClock,
    Trader,
    holding,
    open_venue_as,
    print_bars,
    reports,
    stored,
    until,
    write_profile,
)
from tests.integration.session_kit import stalwart


async def _fills(venue: SimBroker) -> int:
    return len(await venue.executions(venue.now() - timedelta(days=1)))


async def test_unverified_position_trades_nothing_until_confirmed_and_stays_confirmed(
    tmp_path: Path,
) -> None:
    _, config = write_profile(tmp_path, periodic_s=60.0)
    state = tmp_path / "state"
    entry = await holding(config, state)
    risk = max(entry.price - PIVOT, entry.price * 0.002)

    for _ in range(2):  # unverified at every boot until confirmed: a restart changes nothing
        venue = await open_venue_as(BlindVenue, config, state, VirtualClock())
        async with Trader(config, state, venue) as trader:
            assert trader.app.actors[SYMBOL].unverified
            assert [a.symbol for a in trader.alerts if a.kind == "unverified"] == [SYMBOL]
        boot = reports(state)[-1]
        assert boot["critical_issues"] == [f"unverified {SYMBOL}"]
        assert boot["zombies"] == boot["unprotected"] == [], "its resting stop is seen"

    wall, clock = TimerClock(), VirtualClock()
    venue = await open_venue_as(BlindVenue, config, state, clock)
    async with Trader(config, state, venue, wall=wall) as trader:
        actor = trader.app.actors[SYMBOL]
        fills = await _fills(venue)
        await venue.set_price(SYMBOL, round(entry.price + 1.2 * risk, 2))  # past target 1
        await print_bars(venue, clock, 1)
        await until(lambda: (actor.state.last_price or 0.0) > entry.price + risk, "the bar seen")
        await actor.ask(GetState())
        assert await _fills(venue) == fills, "no partial while unverified"

        result = stalwart("confirm", SYMBOL, "--state-dir", str(state), check=False)
        assert result.returncode == 0, result.stderr
        assert SYMBOL in result.stdout
        runs = len(reports(state))
        await until(lambda: wall.asleep[60.0] > 0, "the periodic timer armed")
        await wall.advance(60.0)
        await until(lambda: len(reports(state)) > runs, "the periodic run")
        assert not actor.unverified
        assert reports(state)[-1]["critical_issues"] == []

        await print_bars(venue, clock, 1)  # still past target 1: now the partial is taken
        await until(lambda: stored(state).partials != (), "the partial")
        assert stored(state).qty == 50.0

    venue = await open_venue_as(BlindVenue, config, state, VirtualClock())
    async with Trader(config, state, venue) as trader:
        assert not trader.app.actors[SYMBOL].unverified, "the confirmation outlives a restart"
    assert reports(state)[-1]["critical_issues"] == []

    flat = stalwart("confirm", OTHER, "--state-dir", str(state), check=False)
    assert flat.returncode == 2
    assert "no open position" in flat.stderr
