"""The exchange's pure parts: id mapping and the book in Alpaca's wire shapes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from brokers.alpaca.sdk import AlpacaOrder, Position, TradeActivity, TradeUpdate
from brokers.base import OrderRequest, OrderType, Side
from brokers.exchange import ids, wire
from brokers.sim import BarGenerator, engine
from runtime.clock import TradingCalendar

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def _book() -> engine.Book:
    generator = BarGenerator(
        seed=7, bar_seconds=60, calendar=TradingCalendar(), origin=date(2026, 1, 5)
    )
    return engine.new_book(
        account_id="SIM-PAPER", generator=generator, start=START, base_prices={"AAPL": 100.0}
    )


def _request(cid: str, side: Side, kind: OrderType, stop: float | None = None) -> OrderRequest:
    return OrderRequest(
        client_order_id=cid, symbol="AAPL", side=side, qty=10, type=kind, stop_price=stop
    )


def test_ids_round_trip_and_refuse_strangers() -> None:
    order = ids.order_uuid("SIM-O0000042")
    execution = ids.execution_uuid("SIM-E0000042")

    assert ids.sim_order_id(order) == "SIM-O0000042"
    assert ids.sim_execution_id(execution) == "SIM-E0000042"
    assert ids.sim_order_id(execution) is None
    assert ids.sim_order_id("not-a-uuid") is None
    assert ids.sim_order_id("123e4567-e89b-12d3-a456-426614174000") is None
    with pytest.raises(ValueError, match="not an engine id"):
        ids.order_uuid("manual-1")


def test_activity_id_is_time_then_execution_id() -> None:
    stamp = datetime(2026, 1, 5, 14, 31, 2, 345678, tzinfo=UTC)

    assert ids.activity_id(stamp, "X") == "20260105143102345::X"


def test_amounts_read_as_alpaca_writes_them() -> None:
    assert [wire.amount(v) for v in (100.0, 187.25, -3.0, 0.0001)] == [
        "100",
        "187.25",
        "-3",
        "0.0001",
    ]


def test_trade_updates_pair_each_fill_with_its_order_and_position() -> None:
    book = _book()
    now = START + timedelta(seconds=5)
    entry, events = engine.submit(
        book, _request("e", Side.BUY, OrderType.MARKET), now, latency=timedelta(0)
    )
    events += engine.fill_due_market_orders(book, now, max_fill_qty=None)
    last = book.instruments["AAPL"].last
    for cid in ("s1", "s2"):
        _, more = engine.submit(
            book,
            _request(cid, Side.SELL, OrderType.STOP, round(last - 1, 2)),
            now,
            latency=timedelta(0),
        )
        events += more
    events += engine.set_price(book, "AAPL", round(last - 2, 2), now)

    updates = wire.trade_updates(events, book)

    assert [u["event"] for u in updates] == ["new", "fill", "new", "new", "fill", "fill"]
    assert [u.get("position_qty") for u in updates if u["event"] == "fill"] == ["10", "0", "-10"]
    parsed = [TradeUpdate(**u) for u in updates]  # what alpaca-py's stream builds from them
    assert str(parsed[1].order.id) == ids.order_uuid(entry.order_id)
    assert parsed[1].execution_id is not None


def test_book_entities_parse_with_the_sdk_models() -> None:
    book = _book()
    now = START + timedelta(seconds=5)
    engine.submit(book, _request("e", Side.BUY, OrderType.MARKET), now, latency=timedelta(0))
    engine.fill_due_market_orders(book, now, max_fill_qty=None)

    order = AlpacaOrder(**wire.order_json(next(iter(book.orders.values()))))
    position = Position(**wire.position_json(book.positions["AAPL"], 101.0))
    ((execution, body),) = wire.activities(book)
    activity = TradeActivity(**body)

    assert (order.status, order.filled_qty) == ("filled", "10")
    assert (position.qty, position.side) == ("10", "long")
    assert activity.id.endswith(ids.execution_uuid(execution.exec_id))
    assert activity.cum_qty == 10
    assert activity.leaves_qty == 0
