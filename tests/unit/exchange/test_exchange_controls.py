"""The exchange's gate and ``/_sim/`` controls, and its book across its own restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest

from brokers.alpaca import sdk
from brokers.alpaca.sdk import (
    AlpacaOrder,
    APIError,
    MarketOrderRequest,
    OrderSide,
    StopOrderRequest,
    TimeInForce,
    TradingClient,
    status_code,
)
from tests.unit.exchange.exchange_kit import KEY, SECRET, Exchange, running_exchange, wait_until


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[Exchange]:
    with running_exchange(tmp_path / "exchange.book", speed=60.0) as running:
        yield running


def _client(exchange: Exchange, secret: str = SECRET) -> TradingClient:
    return TradingClient(KEY, secret, paper=True, url_override=exchange.rest_url)


def _market_time(exchange: Exchange) -> datetime:
    stamp: str = exchange.control("GET", "clock")["timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _book(exchange: Exchange) -> tuple[Any, Any, Any]:
    _, orders = exchange.request("GET", "/v2/orders?status=all&limit=500")
    _, positions = exchange.request("GET", "/v2/positions")
    return orders, positions, exchange.executions()


def _buy(client: TradingClient, symbol: str, qty: float, cid: str) -> AlpacaOrder:
    request = MarketOrderRequest(
        symbol=symbol,
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=cid,
    )
    return cast(AlpacaOrder, client.submit_order(request))


def test_wrong_or_missing_credentials_are_refused_and_change_nothing(exchange: Exchange) -> None:
    _buy(_client(exchange), "AAPL", 1, "before")
    wait_until(lambda: len(exchange.executions()) == 1, 10, "the first fill")
    before = _book(exchange)
    wrong = _client(exchange, secret="not-the-secret")

    with pytest.raises(APIError) as account:
        wrong.get_account()
    with pytest.raises(APIError) as order:
        _buy(wrong, "AAPL", 5, "intruder")
    missing, _ = exchange.request("GET", "/v2/account", key=None, secret=None)
    control, _ = exchange.request(
        "POST", "/_sim/hand_trade", {"symbol": "AAPL", "side": "buy", "qty": 1}, secret="nope"
    )

    assert status_code(account.value) == 403
    assert status_code(order.value) == 403
    assert missing == 401
    assert control == 403
    assert _book(exchange) == before


async def test_streams_refuse_wrong_credentials(exchange: Exchange) -> None:
    trade = sdk.TradingStream(KEY, "wrong", paper=True, url_override=exchange.stream_url)
    data = sdk.StockDataStream(KEY, "wrong", url_override=exchange.data_url)
    trade.subscribe_trade_updates(_ignore)

    with pytest.raises(ValueError, match="failed to authenticate"):
        await sdk.start(trade)
    with pytest.raises(ValueError, match="auth failed"):
        await sdk.start(data)
    await trade.close()
    await data.close()


async def _ignore(update: object) -> None:
    return None


def test_price_control_fills_a_resting_stop(exchange: Exchange) -> None:
    client = _client(exchange)
    _buy(client, "MSFT", 10, "entry")
    wait_until(lambda: len(exchange.executions()) == 1, 10, "the entry fill")
    last = exchange.executions()[0]["price"]
    stop = StopOrderRequest(
        symbol="MSFT",
        qty=10,
        side=OrderSide.SELL,
        time_in_force=TimeInForce.GTC,
        stop_price=round(last * 0.9, 2),
        client_order_id="stop",
    )
    placed = cast(AlpacaOrder, client.submit_order(stop))

    answer = exchange.control("POST", "price", {"symbol": "MSFT", "price": round(last * 0.8, 2)})

    assert [f["client_order_id"] for f in answer["fills"]] == ["stop"]
    assert cast(AlpacaOrder, client.get_order_by_id(placed.id)).status == "filled"
    assert client.get_all_positions() == []


def test_market_control_freezes_and_resumes_time(exchange: Exchange) -> None:
    frozen = exchange.control("POST", "market", {"running": False})
    first = _market_time(exchange)
    time.sleep(0.2)  # real time passes; frozen market time must not
    second = _market_time(exchange)
    exchange.control("POST", "market", {"running": True})

    assert frozen["running"] is False
    assert first == second
    wait_until(lambda: _market_time(exchange) > second, 5, "market time to run again")


def test_hand_trade_and_hand_close(exchange: Exchange) -> None:
    bought = exchange.control("POST", "hand_trade", {"symbol": "AAPL", "side": "buy", "qty": 7})
    _, position = exchange.request("GET", "/v2/positions/AAPL")
    closed = exchange.control("POST", "hand_close", {"symbol": "AAPL"})
    _, after = exchange.request("GET", "/v2/positions/AAPL")

    assert bought["client_order_id"].startswith("manual-")
    assert position["qty"] == "7"
    assert closed["side"] == "sell"
    assert closed["qty"] == 7
    assert after["code"] == 40410000
    assert len(exchange.executions()) == 2


async def test_disconnect_drops_every_websocket(exchange: Exchange) -> None:
    stream = sdk.TradingStream(KEY, SECRET, paper=True, url_override=exchange.stream_url)
    stream.subscribe_trade_updates(_ignore)
    await sdk.start(stream)

    dropped = exchange.control("POST", "disconnect")

    with pytest.raises(sdk.WebSocketException):
        await sdk.consume(stream)
    assert dropped == {"dropped": 1}
    await stream.close()


async def test_outage_refuses_rest_and_websockets_then_ends(exchange: Exchange) -> None:
    client = _client(exchange)
    exchange.control("POST", "outage", {"seconds": 1.0})

    with pytest.raises(APIError) as refused:
        client.get_account()
    stream = sdk.TradingStream(KEY, SECRET, paper=True, url_override=exchange.stream_url)
    stream.subscribe_trade_updates(_ignore)
    with pytest.raises(sdk.WebSocketException):
        await sdk.start(stream)
    await stream.close()
    assert exchange.executions() == []  # controls stay reachable

    assert status_code(refused.value) == 503
    wait_until(lambda: exchange.request("GET", "/v2/account")[0] == 200, 5, "the outage to end")


def test_book_survives_the_exchange_restart(exchange: Exchange) -> None:
    client = _client(exchange)
    _buy(client, "AAPL", 3, "kept")
    wait_until(lambda: len(exchange.executions()) == 1, 10, "the fill")
    stop = StopOrderRequest(
        symbol="AAPL",
        qty=3,
        side=OrderSide.SELL,
        time_in_force=TimeInForce.GTC,
        stop_price=1.0,
        client_order_id="resting",
    )
    client.submit_order(stop)
    before = _book(exchange)
    time_before = _market_time(exchange)

    assert exchange.stop() == 0
    exchange.start()

    assert _book(exchange) == before
    assert _market_time(exchange) >= time_before
    assert "exchange stopped, book saved" in exchange.log()
