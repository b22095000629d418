"""The pure matching engine: orders, fills, positions, hand actions, on a Book in memory."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from brokers.base import (
    Bar,
    DuplicateClientOrderId,
    Execution,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)
from brokers.sim import engine
from tests.unit.brokers._sim_kit import (
    OPEN,
    bar_slot,
    first_gap,
    limit,
    market,
    pure_book,
    stop,
)

NOW = OPEN
NO_LATENCY = timedelta(0)


def fills(events: Sequence[object]) -> list[Execution]:
    return [e for e in events if isinstance(e, Execution)]


def test_market_order_fills_at_last_price_once_due() -> None:
    book, _ = pure_book()
    last = book.instruments["AAPL"].last
    order, events = engine.submit(
        book, market("AAPL", Side.BUY, 10), NOW, latency=timedelta(seconds=3)
    )

    assert order.status is OrderStatus.NEW
    assert events == [OrderUpdate(order)]
    assert engine.fill_due_market_orders(book, NOW, max_fill_qty=None) == []

    events = engine.fill_due_market_orders(book, NOW + timedelta(seconds=3), max_fill_qty=None)

    (execution,) = fills(events)
    assert (execution.qty, execution.price, execution.ts) == (10, last, NOW + timedelta(seconds=3))
    assert book.orders[order.order_id].status is OrderStatus.FILLED
    assert book.positions["AAPL"].qty == 10
    assert book.positions["AAPL"].avg_price == last


def test_execution_ids_are_unique_and_recorded() -> None:
    book, _ = pure_book()
    for i in range(5):
        engine.submit(book, market("AAPL", Side.BUY, 1, cid=f"c-{i}"), NOW, latency=NO_LATENCY)
    engine.fill_due_market_orders(book, NOW, max_fill_qty=None)

    ids = [e.exec_id for e in book.executions]
    assert len(ids) == 5
    assert len(set(ids)) == 5
    assert engine.executions_since(book, NOW) == book.executions


def test_average_price_on_add_reduce_and_flip() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    engine.manual_trade(book, "AAPL", Side.BUY, 10, NOW)
    engine.set_price(book, "AAPL", 110.0, NOW)
    engine.manual_trade(book, "AAPL", Side.BUY, 10, NOW)
    assert book.positions["AAPL"].qty == 20
    assert book.positions["AAPL"].avg_price == pytest.approx(105.0)

    engine.manual_trade(book, "AAPL", Side.SELL, 5, NOW)
    assert book.positions["AAPL"].qty == 15
    assert book.positions["AAPL"].avg_price == pytest.approx(105.0)

    engine.set_price(book, "AAPL", 90.0, NOW)
    engine.manual_trade(book, "AAPL", Side.SELL, 25, NOW)
    assert book.positions["AAPL"].qty == -10
    assert book.positions["AAPL"].avg_price == 90.0

    engine.manual_trade(book, "AAPL", Side.BUY, 10, NOW)
    assert "AAPL" not in book.positions


def test_max_fill_qty_fills_market_order_in_chunks_at_bar_opens() -> None:
    book, gen = pure_book()
    order, _ = engine.submit(book, market("AAPL", Side.BUY, 250), NOW, latency=NO_LATENCY)

    first = fills(engine.fill_due_market_orders(book, NOW, max_fill_qty=100))
    assert [e.qty for e in first] == [100]
    assert book.orders[order.order_id].status is OrderStatus.PARTIALLY_FILLED

    rest: list[Execution] = []
    opens: list[float] = []
    for _ in range(3):
        events = engine.advance_bar(book, gen, max_fill_qty=100)
        rest += [e for e in fills(events) if e.symbol == "AAPL"]
        opens += [e.open for e in events if isinstance(e, Bar) and e.symbol == "AAPL"]

    assert [e.qty for e in rest] == [100, 50]
    assert [e.price for e in rest] == opens[:2]
    done = book.orders[order.order_id]
    assert done.status is OrderStatus.FILLED
    assert done.filled_qty == 250
    total = first[0].price * 100 + rest[0].price * 100 + rest[1].price * 50
    assert done.avg_fill_price == pytest.approx(total / 250)
    assert book.positions["AAPL"].qty == 250


def test_fills_of_a_bar_come_before_the_bar() -> None:
    book, gen = pure_book()
    upcoming = gen.bar("AAPL", book.next_bar, 100.0)
    engine.submit(book, stop("AAPL", Side.BUY, 5, upcoming.high), NOW, latency=NO_LATENCY)

    events = engine.advance_bar(book, gen, max_fill_qty=None)

    assert [type(e).__name__ for e in events] == ["Execution", "OrderUpdate", "Bar", "Bar"]
    assert [e.symbol for e in events if isinstance(e, Bar)] == ["AAPL", "MSFT"]
    (execution,) = fills(events)
    assert execution.price == max(upcoming.high, upcoming.open)
    assert execution.ts == upcoming.ts + timedelta(seconds=60)


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_stop_through_a_gap_fills_at_the_open(side: Side) -> None:
    ordinal, close, opening = first_gap(up=side is Side.BUY)
    day = OPEN.date().fromordinal(ordinal)
    book, gen = pure_book(start=bar_slot(389, day))
    engine.advance_bar(book, gen, max_fill_qty=None)  # the day's last bar: last = close
    assert book.instruments["AAPL"].last == close
    trigger = round((close + opening) / 2, 2)
    order, events = engine.submit(book, stop("AAPL", side, 10, trigger), NOW, latency=NO_LATENCY)
    assert fills(events) == []  # not crossed yet

    (execution,) = fills(engine.advance_bar(book, gen, max_fill_qty=None))

    assert execution.price == opening
    assert execution.order_id == order.order_id
    assert (execution.price > trigger) if side is Side.BUY else (execution.price < trigger)


def test_stop_within_a_bar_fills_at_the_stop_or_the_open() -> None:
    book, gen = pure_book()
    bars = {bar_slot(i): gen.bar("AAPL", bar_slot(i), 100.0) for i in range(60)}
    engine.advance_bar(book, gen, max_fill_qty=None)
    trigger = round(min(b.low for b in bars.values()) + 0.01, 2)
    assert trigger < book.instruments["AAPL"].last
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, trigger), NOW, latency=NO_LATENCY)

    hit: list[Execution] = []
    while not hit:
        hit = fills(engine.advance_bar(book, gen, max_fill_qty=None))

    bar = bars[hit[0].ts - timedelta(seconds=60)]
    assert bar.low <= trigger
    assert hit[0].price == min(trigger, bar.open)
    assert book.orders[order.order_id].status is OrderStatus.FILLED
    assert book.positions["AAPL"].qty == -10


def test_limit_orders_fill_when_touched_at_limit_or_better() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    buy, _ = engine.submit(book, limit("AAPL", Side.BUY, 5, 98.0, "l-b"), NOW, latency=NO_LATENCY)
    sell, _ = engine.submit(
        book, limit("AAPL", Side.SELL, 5, 103.0, "l-s"), NOW, latency=NO_LATENCY
    )

    assert fills(engine.set_price(book, "AAPL", 99.0, NOW)) == []
    (bought,) = fills(engine.set_price(book, "AAPL", 97.5, NOW))
    (sold,) = fills(engine.set_price(book, "AAPL", 104.0, NOW))

    assert (bought.order_id, bought.price) == (buy.order_id, 97.5)
    assert (sold.order_id, sold.price) == (sell.order_id, 104.0)
    assert "AAPL" not in book.positions


def test_marketable_limit_fills_on_arrival_at_last_price() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    _, events = engine.submit(book, limit("AAPL", Side.BUY, 5, 101.0), NOW, latency=NO_LATENCY)
    assert [e.price for e in fills(events)] == [100.0]


def test_set_price_fills_resting_stop_at_the_new_price() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    engine.manual_trade(book, "AAPL", Side.BUY, 10, NOW)
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 95.0), NOW, latency=NO_LATENCY)

    (execution,) = fills(engine.set_price(book, "AAPL", 90.0, NOW))

    assert (execution.order_id, execution.price) == (order.order_id, 90.0)
    assert "AAPL" not in book.positions


def test_bars_continue_from_a_set_price() -> None:
    book, gen = pure_book()
    engine.advance_bar(book, gen, max_fill_qty=None)
    engine.set_price(book, "AAPL", 250.0, NOW)
    (bar,) = [
        e
        for e in engine.advance_bar(book, gen, max_fill_qty=None)
        if isinstance(e, Bar) and e.symbol == "AAPL"
    ]
    assert bar.open == 250.0
    assert book.instruments["AAPL"].last == bar.close


def test_cancel_open_order_and_errors() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 95.0), NOW, latency=NO_LATENCY)

    (update,) = engine.cancel(book, order.order_id, NOW)

    assert isinstance(update, OrderUpdate)
    assert update.order.status is OrderStatus.CANCELED
    assert engine.open_orders(book) == []
    assert engine.cancel(book, order.order_id, NOW) == []  # idempotent
    with pytest.raises(OrderNotFound):
        engine.cancel(book, "SIM-O9999999", NOW)
    filled, _ = engine.manual_trade(book, "AAPL", Side.BUY, 1, NOW)
    with pytest.raises(OrderRejected, match="filled"):
        engine.cancel(book, filled.order_id, NOW)


def test_replace_moves_stop_and_keeps_ids() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 95.0), NOW, latency=NO_LATENCY)

    moved, events = engine.replace_stop(book, order.order_id, NOW, stop_price=98.0, qty=6)

    assert (moved.order_id, moved.client_order_id) == (order.order_id, order.client_order_id)
    assert (moved.stop_price, moved.qty, moved.status) == (98.0, 6, OrderStatus.NEW)
    assert events == [OrderUpdate(moved)]
    assert fills(engine.set_price(book, "AAPL", 97.0, NOW))[0].qty == 6


def test_replace_across_the_price_fills_at_once() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 95.0), NOW, latency=NO_LATENCY)
    moved, events = engine.replace_stop(book, order.order_id, NOW, stop_price=101.0)
    assert moved.status is OrderStatus.FILLED
    assert [e.price for e in fills(events)] == [100.0]


@pytest.mark.parametrize(
    ("stop_price", "qty", "match"),
    [(0.0, None, "stop_price"), (float("nan"), None, "stop_price"), (94.0, 0.0, "qty")],
)
def test_replace_rejects_bad_values(stop_price: float, qty: float | None, match: str) -> None:
    book, _ = pure_book()
    order, _ = engine.submit(book, stop("AAPL", Side.SELL, 10, 50.0), NOW, latency=NO_LATENCY)
    with pytest.raises(OrderRejected, match=match):
        engine.replace_stop(book, order.order_id, NOW, stop_price=stop_price, qty=qty)
    assert book.orders[order.order_id].stop_price == 50.0


def test_replace_refuses_non_stops_and_unknown_orders() -> None:
    book, _ = pure_book()
    engine.set_price(book, "AAPL", 100.0, NOW)
    order, _ = engine.submit(book, limit("AAPL", Side.BUY, 10, 90.0), NOW, latency=NO_LATENCY)
    with pytest.raises(OrderRejected, match="not a resting stop"):
        engine.replace_stop(book, order.order_id, NOW, stop_price=91.0)
    with pytest.raises(OrderNotFound):
        engine.replace_stop(book, "nope", NOW, stop_price=91.0)


def test_duplicate_client_order_id_is_refused_even_after_fill() -> None:
    book, _ = pure_book()
    engine.submit(book, market("AAPL", Side.BUY, 1, cid="dup"), NOW, latency=NO_LATENCY)
    engine.fill_due_market_orders(book, NOW, max_fill_qty=None)

    with pytest.raises(DuplicateClientOrderId) as caught:
        engine.submit(book, market("MSFT", Side.BUY, 1, cid="dup"), NOW, latency=NO_LATENCY)

    assert caught.value.client_order_id == "dup"
    assert len(book.orders) == 1


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (market("AAPL", Side.BUY, 0), "qty"),
        (market("AAPL", Side.BUY, -5), "qty"),
        (market("AAPL", Side.BUY, float("inf")), "qty"),
        (market("AAPL", Side.BUY, float("nan")), "qty"),
        (market("ZZZZ", Side.BUY, 1), "unknown symbol"),
        (market("AAPL", Side.BUY, 1, cid=""), "client_order_id"),
        (
            OrderRequest(
                client_order_id="x", symbol="AAPL", side=Side.SELL, qty=1, type=OrderType.STOP
            ),
            "stop_price",
        ),
        (stop("AAPL", Side.SELL, 1, 0.0), "stop_price"),
        (stop("AAPL", Side.SELL, 1, float("nan")), "stop_price"),
        (
            OrderRequest(
                client_order_id="x", symbol="AAPL", side=Side.BUY, qty=1, type=OrderType.LIMIT
            ),
            "limit_price",
        ),
        (
            OrderRequest(
                client_order_id="x",
                symbol="AAPL",
                side=Side.BUY,
                qty=1,
                type=OrderType.MARKET,
                stop_price=9.0,
            ),
            "must not carry",
        ),
    ],
)
def test_bad_orders_are_rejected_and_change_nothing(request_: OrderRequest, match: str) -> None:
    book, _ = pure_book()
    with pytest.raises(OrderRejected, match=match):
        engine.submit(book, request_, NOW, latency=NO_LATENCY)
    assert book.orders == {}
    assert book.client_ids == {}
    assert book.order_seq == 0


def test_manual_trade_uses_manual_client_ids_and_skips_taken_ones() -> None:
    book, _ = pure_book()
    engine.submit(book, market("AAPL", Side.BUY, 1, cid="manual-1"), NOW, latency=NO_LATENCY)
    execution, events = engine.manual_trade(book, "AAPL", Side.BUY, 3, NOW)
    assert execution.client_order_id == "manual-2"
    assert [type(e).__name__ for e in events] == ["OrderUpdate", "Execution", "OrderUpdate"]
    with pytest.raises(OrderRejected):
        engine.manual_trade(book, "AAPL", Side.BUY, 0, NOW)


def test_close_position_flattens_and_optionally_cancels() -> None:
    book, _ = pure_book()
    engine.manual_trade(book, "AAPL", Side.SELL, 7, NOW)
    order, _ = engine.submit(book, stop("AAPL", Side.BUY, 7, 500.0), NOW, latency=NO_LATENCY)

    execution, _ = engine.close_position(book, "AAPL", NOW)
    assert execution is not None
    assert (execution.side, execution.qty) == (Side.BUY, 7)
    assert "AAPL" not in book.positions
    assert engine.open_orders(book) == [book.orders[order.order_id]]  # the stop stays

    none, events = engine.close_position(book, "AAPL", NOW, cancel_orders=True)
    assert none is None
    assert engine.open_orders(book) == []
    assert [type(e).__name__ for e in events] == ["OrderUpdate"]


def test_prune_forgets_old_closed_orders_and_executions_but_keeps_open_ones() -> None:
    book, _ = pure_book()
    engine.manual_trade(book, "AAPL", Side.BUY, 1, NOW)
    resting, _ = engine.submit(book, stop("AAPL", Side.SELL, 1, 50.0), NOW, latency=NO_LATENCY)
    later = NOW + timedelta(days=40)
    engine.manual_trade(book, "AAPL", Side.BUY, 1, later)

    engine.prune(book, NOW + timedelta(days=30))

    assert [e.ts for e in book.executions] == [later]
    assert resting.order_id in book.orders
    assert len(book.orders) == 2
    assert set(book.client_ids) == {resting.client_order_id, "manual-2"}
