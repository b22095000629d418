"""Stop-limit orders in the matching engine: triggered as a stop, filled at the limit or better."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

import pytest

from brokers.base import Bar, Execution, OrderRejected, OrderRequest, OrderStatus, OrderType, Side
from brokers.sim import engine
from tests.unit.brokers._sim_kit import (
    OPEN,
    bar_slot,
    first_gap,
    limit,
    market,
    pure_book,
    stop,
    stop_limit,
)

NOW = OPEN
NO_LATENCY = timedelta(0)


def fills(events: Sequence[object]) -> list[Execution]:
    return [e for e in events if isinstance(e, Execution)]


def test_stop_limit_rests_until_its_stop_trades_then_fills_within_its_limit() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, events = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 10, 101.0, 101.5), NOW, latency=NO_LATENCY
    )
    assert fills(events) == []

    assert fills(engine.set_price(book, "AAPL", 100.9, NOW)) == []
    assert book.stop_triggered == {}
    (execution,) = fills(engine.set_price(book, "AAPL", 101.2, NOW))

    assert (execution.order_id, execution.qty, execution.price) == (order.order_id, 10, 101.2)
    assert book.orders[order.order_id].status is OrderStatus.FILLED
    assert book.stop_triggered == {}


def test_stop_limit_gapping_past_its_limit_rests_as_a_limit() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(
        book, stop_limit("AAPL", Side.SELL, 10, 95.0, 94.5), NOW, latency=NO_LATENCY
    )
    later = NOW + timedelta(seconds=30)

    assert fills(engine.set_price(book, "AAPL", 93.0, later)) == []  # gapped past the limit
    assert book.orders[order.order_id].status is OrderStatus.NEW
    assert book.stop_triggered == {order.order_id: later}
    assert fills(engine.set_price(book, "AAPL", 94.0, NOW)) == []  # still worse than the limit
    (execution,) = fills(engine.set_price(book, "AAPL", 96.0, NOW))  # a limit now, not a stop

    assert (execution.order_id, execution.price) == (order.order_id, 96.0)
    assert book.stop_triggered == {}
    assert book.positions["AAPL"].qty == -10


def test_stop_limit_triggered_by_a_bar_fills_at_the_stop() -> None:
    book, gen = pure_book()
    upcoming = gen.bar("AAPL", book.next_bar, 100.0)
    assert upcoming.open == book.instruments["AAPL"].last  # a session's bars do not gap
    trigger = round((upcoming.open + upcoming.high) / 2, 2)
    assert upcoming.open < trigger <= upcoming.high
    order, _ = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 5, trigger, trigger + 0.05), NOW, latency=NO_LATENCY
    )

    (execution,) = fills(engine.advance_bar(book, gen, max_fill_qty=None))

    assert (execution.order_id, execution.qty, execution.price) == (order.order_id, 5, trigger)
    assert execution.ts == upcoming.ts + timedelta(seconds=60)


def test_stop_limit_through_an_opening_gap_waits_for_its_limit() -> None:
    ordinal, close, opening = first_gap(up=True)
    book, gen = pure_book(start=bar_slot(389, date.fromordinal(ordinal)))
    engine.advance_bar(book, gen, max_fill_qty=None)  # the day's last bar: last = close
    trigger = round((close + opening) / 2, 2)
    order, events = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 10, trigger, trigger), NOW, latency=NO_LATENCY
    )
    assert fills(events) == []

    events = engine.advance_bar(book, gen, max_fill_qty=None)  # opens above the limit

    (bar,) = [e for e in events if isinstance(e, Bar) and e.symbol == "AAPL"]
    assert bar.open == opening > trigger
    assert fills(events) == []
    assert order.order_id in book.stop_triggered
    assert book.orders[order.order_id].status is OrderStatus.NEW
    (execution,) = fills(engine.set_price(book, "AAPL", trigger - 0.5, NOW))
    assert execution.price == trigger - 0.5


def test_triggered_stop_limit_fills_on_a_bar_at_its_limit_or_the_open() -> None:
    book, gen = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(
        book, stop_limit("AAPL", Side.SELL, 10, 99.0, 98.0), NOW, latency=NO_LATENCY
    )
    engine.set_price(book, "AAPL", 97.0, NOW)  # triggers below the limit: rests
    assert order.order_id in book.stop_triggered

    hit: list[Execution] = []
    bar: Bar | None = None
    while not hit:
        events = engine.advance_bar(book, gen, max_fill_qty=None)
        hit = fills(events)
        bar = next(e for e in events if isinstance(e, Bar) and e.symbol == "AAPL")

    assert bar is not None
    assert bar.high >= 98.0
    assert hit[0].price == max(98.0, bar.open)
    assert hit[0].qty == 10  # like a limit, a triggered stop-limit fills whole


@pytest.mark.parametrize(
    ("last", "limit_price", "expected"),
    [(100.0, 101.0, [100.0]), (100.0, 99.5, [])],
)
def test_crossed_stop_limit_on_arrival_fills_at_the_last_price_only_within_its_limit(
    last: float, limit_price: float, expected: list[float]
) -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", last, NOW)

    order, events = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 3, 99.0, limit_price), NOW, latency=NO_LATENCY
    )

    assert [e.price for e in fills(events)] == expected
    assert (order.order_id in book.stop_triggered) == (not expected)


def test_cancel_forgets_a_triggered_stop_limit() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 3, 99.0, 98.0), NOW, latency=NO_LATENCY
    )
    assert order.order_id in book.stop_triggered

    engine.cancel(book, order.order_id, NOW)

    assert book.stop_triggered == {}
    assert book.orders[order.order_id].status is OrderStatus.CANCELED


@pytest.mark.parametrize(
    ("stop_price", "limit_price", "match"),
    [
        (None, 101.0, "stop_limit order needs a positive stop_price, got None"),
        (101.0, None, "stop_limit order needs a positive limit_price, got None"),
        (0.0, 101.0, "stop_price"),
        (101.0, float("nan"), "limit_price"),
        (-1.0, 101.0, "stop_price"),
    ],
)
def test_bad_stop_limits_are_rejected_and_change_nothing(
    stop_price: float | None, limit_price: float | None, match: str
) -> None:
    book, _ = pure_book()
    request = OrderRequest(
        client_order_id="x",
        symbol="AAPL",
        side=Side.BUY,
        qty=1,
        type=OrderType.STOP_LIMIT,
        stop_price=stop_price,
        limit_price=limit_price,
    )

    with pytest.raises(OrderRejected, match=match):
        engine.submit(book, request, NOW, latency=NO_LATENCY)

    assert (book.orders, book.client_ids, book.order_seq) == ({}, {}, 0)


def test_stop_and_market_orders_still_refuse_a_limit_price() -> None:
    book, _ = pure_book()
    with_limit = OrderRequest(
        client_order_id="x",
        symbol="AAPL",
        side=Side.SELL,
        qty=1,
        type=OrderType.STOP,
        stop_price=90.0,
        limit_price=89.0,
    )
    with pytest.raises(OrderRejected, match="stop order must not carry a limit_price"):
        engine.submit(book, with_limit, NOW, latency=NO_LATENCY)
    assert book.orders == {}


def test_replace_order_moves_a_stop_limit_and_keeps_ids() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(
        book, stop_limit("AAPL", Side.SELL, 10, 95.0, 94.0), NOW, latency=NO_LATENCY
    )

    moved, events = engine.replace_order(
        book, order.order_id, NOW, stop_price=97.0, limit_price=96.5, qty=4
    )

    assert (moved.order_id, moved.client_order_id) == (order.order_id, order.client_order_id)
    assert (moved.stop_price, moved.limit_price, moved.qty) == (97.0, 96.5, 4)
    assert fills(events) == []
    (execution,) = fills(engine.set_price(book, "AAPL", 96.8, NOW))
    assert (execution.qty, execution.price) == (4, 96.8)


def test_replace_order_keeps_what_it_is_not_given_and_moves_limits() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    resting, _ = engine.submit(
        book, stop_limit("AAPL", Side.BUY, 10, 105.0, 106.0), NOW, latency=NO_LATENCY
    )
    bid, _ = engine.submit(book, limit("AAPL", Side.BUY, 2, 90.0, "l-2"), NOW, latency=NO_LATENCY)

    kept, _ = engine.replace_order(book, resting.order_id, NOW, limit_price=107.0)
    moved, events = engine.replace_order(book, bid.order_id, NOW, limit_price=100.5)

    assert (kept.stop_price, kept.limit_price, kept.qty) == (105.0, 107.0, 10)
    assert moved.status is OrderStatus.FILLED  # moved across the last price
    assert [e.price for e in fills(events)] == [100.0]


def test_replace_order_refuses_prices_a_type_does_not_carry_and_market_orders() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    resting, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 95.0), NOW, latency=NO_LATENCY)
    pending, _ = engine.submit(book, market("AAPL", Side.BUY, 1), NOW, latency=timedelta(hours=1))
    resting_stop_limit, _ = engine.submit(
        book, stop_limit("AAPL", Side.SELL, 1, 90.0, 89.0), NOW, latency=NO_LATENCY
    )

    with pytest.raises(OrderRejected, match="stop order: it has no limit_price"):
        engine.replace_order(book, resting.order_id, NOW, limit_price=94.0)
    with pytest.raises(OrderRejected, match="not a resting stop, limit or stop_limit"):
        engine.replace_order(book, pending.order_id, NOW, qty=2)
    with pytest.raises(OrderRejected, match="not a resting stop"):
        engine.replace_stop(book, resting_stop_limit.order_id, NOW, stop_price=91.0)
    assert book.orders[resting.order_id].limit_price is None
    assert book.orders[resting_stop_limit.order_id].stop_price == 90.0


def test_prune_drops_trigger_marks_of_closed_orders() -> None:
    book, _ = pure_book()
    book.stop_triggered["SIM-O9999999"] = NOW  # a mark left by a book of an older build

    engine.prune(book, NOW)

    assert book.stop_triggered == {}
