"""The Alpaca adapter's pure parts, fed Alpaca's payloads as Alpaca (not our exchange) sends them.

Real Alpaca replaces an order by a new one; the local exchange keeps the id, so
these payloads are written here, from Alpaca's documented shapes.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brokers.alpaca import AlpacaSettings, translate
from brokers.alpaca.clock import VenueClock
from brokers.alpaca.connection import Backoff
from brokers.alpaca.sdk import TradeUpdate
from brokers.base import Execution, OrderStatus, OrderType, OrderUpdate, Side

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def _order(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "11111111-1111-4111-8111-111111111111",
        "client_order_id": "sw-abc-AAPL-260105-1-stop",
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
        "submitted_at": T0.isoformat(),
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "qty": "10",
        "filled_qty": "0",
        "order_class": "simple",
        "type": "stop",
        "side": "sell",
        "time_in_force": "gtc",
        "stop_price": "99.5",
        "status": "new",
        "extended_hours": False,
    }
    return body | changes


def _update(event: str, order: dict[str, Any], **fields: Any) -> TradeUpdate:
    body: dict[str, Any] = {"event": event, "order": order, "timestamp": T0.isoformat()}
    return TradeUpdate(**(body | fields))  # as alpaca-py builds it from a stream frame


def test_replacement_ids_keep_the_root() -> None:
    root = "sw-abc-BRK.B-260105-1-stop"

    first = translate.next_replacement_id(root)
    second = translate.next_replacement_id(first)

    assert (first, second) == (f"{root}.r1", f"{root}.r2")
    assert translate.root_client_id(second) == root
    assert translate.root_client_id(root) == root


def test_the_replaced_half_of_a_replacement_is_not_a_cancel() -> None:
    old = _order(status="replaced", replaced_by="22222222-2222-4222-8222-222222222222")
    new = _order(
        id="22222222-2222-4222-8222-222222222222",
        client_order_id="sw-abc-AAPL-260105-1-stop.r1",
        stop_price="99.75",
        replaces="11111111-1111-4111-8111-111111111111",
    )

    assert translate.trade_update_events(_update("replaced", old)) == []
    (update,) = translate.trade_update_events(_update("replaced", new))
    assert isinstance(update, OrderUpdate)
    assert update.order.client_order_id == "sw-abc-AAPL-260105-1-stop"
    assert update.order.status is OrderStatus.NEW
    assert update.order.stop_price == 99.75


def test_a_fill_is_an_execution_then_the_order() -> None:
    filled = _order(status="partially_filled", filled_qty="4", filled_avg_price="99.4")

    events = translate.trade_update_events(
        _update(
            "partial_fill",
            filled,
            execution_id="33333333-3333-4333-8333-333333333333",
            price="99.4",
            qty="4",
            position_qty="6",
        )
    )

    assert events[0] == Execution(
        exec_id="33333333-3333-4333-8333-333333333333",
        order_id="11111111-1111-4111-8111-111111111111",
        client_order_id="sw-abc-AAPL-260105-1-stop",
        symbol="AAPL",
        side=Side.SELL,
        qty=4.0,
        price=99.4,
        ts=T0,
    )
    assert isinstance(events[1], OrderUpdate)
    assert events[1].order.status is OrderStatus.PARTIALLY_FILLED


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("accepted", OrderStatus.NEW),
        ("pending_new", OrderStatus.NEW),
        ("expired", OrderStatus.CANCELED),
        ("done_for_day", OrderStatus.CANCELED),
        ("rejected", OrderStatus.REJECTED),
    ],
)
def test_statuses(status: str, expected: OrderStatus) -> None:
    event = "rejected" if status == "rejected" else "new"
    (update,) = translate.trade_update_events(_update(event, _order(status=status)))

    assert isinstance(update, OrderUpdate)
    assert update.order.status is expected


def test_ignored_events_and_unmodelled_orders() -> None:
    assert translate.trade_update_events(_update("pending_cancel", _order())) == []
    with pytest.raises(ValueError, match="trailing_stop"):
        translate.trade_update_events(_update("new", _order(type="trailing_stop")))


def test_a_stop_limit_order_is_modelled_with_both_prices() -> None:
    (update,) = translate.trade_update_events(
        _update("new", _order(type="stop_limit", stop_price="99.5", limit_price="99.25"))
    )

    assert isinstance(update, OrderUpdate)
    assert update.order.type is OrderType.STOP_LIMIT
    assert (update.order.stop_price, update.order.limit_price) == (99.5, 99.25)


def test_ticks() -> None:
    assert translate.tick(100.1493) == 100.15
    assert translate.tick(0.123456) == 0.1235


def test_backoff_doubles_to_its_cap_with_equal_jitter() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(3))

    delays = [backoff.delay(n) for n in range(1, 8)]

    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)


def test_venue_clock_extrapolates_stops_at_the_close_and_never_goes_back() -> None:
    mono = [100.0]
    clock = VenueClock(lambda: mono[0])
    assert clock.now() is None

    clock.update(T0, speed=60.0, running=True, close=T0 + timedelta(minutes=30))
    mono[0] += 10  # ten real seconds: ten market minutes
    at_ten = clock.now()
    mono[0] += 60  # would be an hour: the session closes at +30 min
    at_close = clock.now()
    clock.update(T0 + timedelta(minutes=5), speed=60.0, running=False, close=T0)

    assert at_ten == T0 + timedelta(minutes=10)
    assert at_close == T0 + timedelta(minutes=30)
    assert clock.now() == at_close  # a late reading does not move time backwards


def test_settings_derive_the_local_exchange_urls() -> None:
    local = AlpacaSettings(url_override="http://127.0.0.1:8765/")
    real = AlpacaSettings()

    assert local.stream_url() == "ws://127.0.0.1:8765/stream"
    assert local.data_stream_url() == "ws://127.0.0.1:8765/v2/iex"
    assert local.data_url() == "http://127.0.0.1:8765/"
    assert (real.stream_url(), real.data_stream_url(), real.data_url()) == (None, None, None)
