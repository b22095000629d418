"""A stop that fills in parts, end to end: a real session against the sim venue.

The venue fills market orders and triggered stops in chunks (``max_fill_qty``),
one more each bar, as a thin market does. The entry then fills in pieces, its
stop follows the position up; once the price falls through the stop, the stop
fills in pieces too. Between the pieces the position is still protected by what
of the stop is left, so nothing may call it unprotected or a hand trade, and
the trade is booked once, whole, when the last piece fills.
"""

from __future__ import annotations

from pathlib import Path

from brokers.base import OrderStatus, OrderType, Side
from runtime.alerts import Severity
from runtime.clock import VirtualClock
from tests.integration.recovery_kit import (
    ABOVE,
    STOP_HIT,
    SYMBOL,
    Trader,
    closed_trades,
    executions,
    open_venue,
    position,
    print_bars,
    stops,
    stored,
    until,
    warm_up,
    write_profile,
)

CHUNK = 30.0  # the strategy buys 100: four pieces each way


async def test_a_stop_filling_in_parts_closes_the_trade_once_with_no_alarm(tmp_path: Path) -> None:
    _, config = write_profile(tmp_path, max_fill_qty=CHUNK)
    state = tmp_path / "state"
    clock = VirtualClock()
    venue = await open_venue(config, state, clock)
    await warm_up(venue, clock)

    async with Trader(config, state, venue) as trader:
        await venue.set_price(SYMBOL, ABOVE)
        for _ in range(8):  # the entry fills a piece a bar; the stop grows with it
            await print_bars(venue, clock, 1)
            if await position(venue) == 100.0:
                break

        async def protected_in_full() -> bool:
            rest = await stops(venue)
            stop = trader.actor_state().stop
            return (
                len(rest) == 1
                and rest[0].qty == 100.0
                and stop is not None
                and (stop.order_id, stop.status, stop.qty) == (rest[0].order_id, "live", 100.0)
            )

        await until(protected_in_full, "the whole entry with its stop resting for all of it")
        (stop_order,) = await stops(venue)

        await venue.set_price(SYMBOL, STOP_HIT)  # triggers the stop: its first piece fills
        held = await position(venue)
        assert held == 100.0 - CHUNK
        await until(lambda: trader.actor_state().qty == held, "the actor to book the first piece")
        assert trader.actor_state().stop is not None, "what of the stop rests still protects"
        assert closed_trades(state) == []
        for _ in range(6):
            await print_bars(venue, clock, 1)
            if await position(venue) == 0.0:
                break
        await until(lambda: len(closed_trades(state)) == 1, "the stopped-out trade stored")
        await until(lambda: trader.actor_state().stop is None, "the filled stop dropped")
        final = trader.actor_state()
        assert await position(venue) == 0.0
        since = stop_order.created_at
        assert since is not None
        fills = await venue.executions(since)
        pieces = [e for e in fills if e.order_id == stop_order.order_id]
        done = await venue.order_by_client_id(stop_order.client_order_id)

    assert [e.qty for e in pieces] == [30.0, 30.0, 30.0, 10.0]
    assert all(e.side is Side.SELL for e in pieces)
    assert done is not None
    assert (done.type, done.status) == (OrderType.STOP, OrderStatus.FILLED)
    (trade,) = closed_trades(state)
    assert (trade["qty"], trade["exit_reason"]) == (100.0, "stop")
    assert final.is_flat
    assert final.stop is None
    assert final.trades_today == 1
    assert stored(state).is_flat
    stored_fills = executions(state)
    assert all(e.exec_id in stored_fills for e in pieces), "every piece is in the store"
    loud = [a for a in trader.alerts if a.severity is Severity.CRITICAL]
    assert loud == [], loud
    kinds = {a.kind for a in trader.alerts}
    assert not kinds & {"unprotected", "zombie", "drift", "orphan"}, trader.alerts
