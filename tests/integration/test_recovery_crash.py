"""Recovery after a real kill -9: the four crash cases of the seed plan, and a new trading day.

A trader process (``recovery_kit.py`` run as a script) trades on the sim venue
until it holds the state to crash in, then dies by SIGKILL. While it is down
the test plays the outside world on the venue's book (a price move that fills
the resting stop, the market moving on to the next day); then a new trader is
started on the same files and must recover from the store and the venue alone.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from actors.messages import GetState
from actors.state import ExitReason
from brokers.base import Side
from brokers.sim import read_book
from runtime.clock import VirtualClock
from runtime.config import Config
from tests.integration.recovery_kit import (
    PIVOT,
    STOP_HIT,
    SYMBOL,
    Trader,
    closed_trades,
    crash_in,
    executions,
    open_venue,
    position,
    print_bars,
    reports,
    stops,
    stored,
    until,
    write_profile,
)


def _profile(tmp_path: Path) -> tuple[Path, Config, Path]:
    profile, config = write_profile(tmp_path)
    return profile, config, tmp_path / "state"


async def test_crash_with_open_position_recovers_it_with_its_stop_active(tmp_path: Path) -> None:
    profile, config, state = _profile(tmp_path)
    await crash_in("open", state, profile)
    book = read_book(state / "sim-venue.book")
    assert book is not None
    fills_before = len(book.executions)

    clock = VirtualClock()  # never advanced: the market stands still while we look
    venue = await open_venue(config, state, clock)
    async with Trader(config, state, venue) as trader:
        assert await position(venue) == 100.0
        resting = await stops(venue)
        held = trader.actor_state()
    after = stored(state)

    assert len(resting) == 1, resting
    assert resting[0].qty == 100.0
    assert resting[0].side is Side.SELL
    assert held.qty == after.qty == 100.0
    assert after.stop is not None
    assert after.stop.order_id == resting[0].order_id
    assert after.stop.status == "live"
    assert after.stop.price == resting[0].stop_price
    # The only order in flight is the resting stop, acknowledged.
    assert [(i.client_order_id, i.order_id) for i in after.intents] == [
        (after.stop.client_order_id, resting[0].order_id)
    ]
    book = read_book(state / "sim-venue.book")
    assert book is not None
    assert len(book.executions) == fills_before, "no re-entry"
    boot = reports(state)[-1]
    assert boot["mode"] == "boot"
    assert boot["critical_issues"] == []
    assert boot["zombies"] == boot["orphans"] == boot["drifts"] == boot["unprotected"] == []


async def test_crash_after_the_partial_keeps_50_shares_and_the_break_even_stop(
    tmp_path: Path,
) -> None:
    profile, config, state = _profile(tmp_path)
    info = await crash_in("partial", state, profile)
    entry_price = info["entry_price"]

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue):
        held = await position(venue)
        resting = await stops(venue)
    after = stored(state)

    assert held == after.qty == 50.0
    assert [(p.qty, p.reason) for p in after.partials] == [(50.0, "partial")]
    assert after.avg_price == entry_price
    assert after.stop is not None
    assert after.stop.price == entry_price, "stop at break-even"
    assert after.stop.qty == 50.0
    assert len(resting) == 1
    assert (resting[0].order_id, resting[0].stop_price, resting[0].qty) == (
        after.stop.order_id,
        entry_price,
        50.0,
    )
    assert closed_trades(state) == [], "the trade is still open"


async def test_crash_after_two_stopped_out_attempts_refuses_the_third_at_that_pivot(
    tmp_path: Path,
) -> None:
    profile, config, state = _profile(tmp_path)
    await crash_in("two_stopped", state, profile)
    assert [t["exit_reason"] for t in closed_trades(state)] == ["stop", "stop"]
    day = stored(state).trading_day
    assert stored(state).attempts_for(day, PIVOT, Side.BUY) == 2

    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    async with Trader(config, state, venue) as trader:
        orders_before = len(await venue.open_orders())
        fills_before = len(await venue.executions(venue.now() - timedelta(days=1)))
        # The same break of the same pivot that entered twice before the crash.
        await venue.set_price(SYMBOL, 101.5)
        await print_bars(venue, clock, 1)
        await until(
            lambda: (trader.actor_state().last_price or 0.0) > PIVOT,
            "the trader to see the break",
        )
        await trader.app.actors[SYMBOL].ask(GetState())  # the bar's turn is over
        assert await position(venue) == 0.0
        assert len(await venue.open_orders()) == orders_before
        assert len(await venue.executions(venue.now() - timedelta(days=1))) == fills_before
        assert trader.actor_state().attempts_for(day, PIVOT, Side.BUY) == 2
    assert stored(state).attempts_for(day, PIVOT, Side.BUY) == 2


async def test_stop_filled_while_down_closes_the_trade_at_that_fill(tmp_path: Path) -> None:
    profile, config, state = _profile(tmp_path)
    info = await crash_in("open", state, profile)

    # While the trader is down the market falls through the resting stop.
    venue = await open_venue(config, state, VirtualClock())
    (fill,) = await venue.set_price(SYMBOL, STOP_HIT)
    await venue.close()
    assert fill.side is Side.SELL
    assert fill.qty == 100.0

    venue = await open_venue(config, state, VirtualClock())
    async with Trader(config, state, venue):
        assert await position(venue) == 0.0
        assert await venue.open_orders() == []

    (trade,) = closed_trades(state)
    assert trade["exit_reason"] == ExitReason.STOP.value, "the stop's own fill, not a zombie guess"
    assert trade["exit_price"] == fill.price
    assert trade["entry_price"] == info["entry_price"]
    assert trade["realized_pnl"] == (fill.price - info["entry_price"]) * 100.0
    assert fill.exec_id in executions(state)
    after = stored(state)
    assert after.is_flat
    assert after.stop is None
    assert after.intents == ()
    boot = reports(state)[-1]
    assert boot["mode"] == "boot"
    assert boot["replayed_fills"] == 1
    assert boot["zombies"] == []
    assert boot["critical_issues"] == []


async def test_store_from_a_previous_trading_day_resets_day_fields_and_keeps_the_position(
    tmp_path: Path,
) -> None:
    profile, config, state = _profile(tmp_path)
    await crash_in("stopped_then_open", state, profile)
    before = stored(state)
    assert before.qty == 100.0
    assert before.trades_today == 1
    assert before.realized_pnl_today < 0
    assert before.attempts_for(before.trading_day, PIVOT, Side.BUY) == 2

    # While the trader is down the market closes and opens the next day, well above the stop.
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await venue.connect()
    await venue.set_price(SYMBOL, 120.0)
    await print_bars(venue, clock, 7 * 60)
    await venue.close()

    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    async with Trader(config, state, venue):
        today = stored(state).trading_day
        resting = await stops(venue)
    after = stored(state)

    assert today > before.trading_day
    assert after.trading_day == today
    assert after.attempts == {}
    assert after.realized_pnl_today == 0.0
    assert after.trades_today == 0
    assert after.qty == 100.0
    assert after.avg_price == before.avg_price
    assert after.stop is not None
    assert len(resting) == 1
    assert after.stop.order_id == resting[0].order_id
    assert after.entries == before.entries, "the position's own metadata is kept"
