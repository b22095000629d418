"""Stop-limit orders over the exchange's trading REST, driven by the real alpaca-py client.

One exchange process serves the module with its market frozen, so prices move
only by ``POST /_sim/price``; each test trades its own symbol.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest

from brokers.alpaca.sdk import (
    AlpacaOrder,
    AlpacaOrderType,
    APIError,
    GetOrdersRequest,
    OrderSide,
    QueryOrderStatus,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
    TimeInForce,
    TradingClient,
    status_code,
)
from tests.unit.exchange.exchange_kit import KEY, SECRET, Exchange, running_exchange

SYMBOLS = "AAPL,MSFT,NVDA,AMD,TSLA,SPY"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    state = tmp_path_factory.mktemp("exchange") / "exchange.book"
    with running_exchange(state, symbols=SYMBOLS) as running:
        running.control("POST", "market", {"running": False})
        yield running


@pytest.fixture
def client(exchange: Exchange) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=exchange.rest_url)


def _cid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _client_id(request: StopLimitOrderRequest) -> str:
    assert request.client_order_id is not None
    return request.client_order_id


def _stop_limit(
    symbol: str, side: OrderSide, stop_price: float, limit_price: float, qty: float = 10
) -> StopLimitOrderRequest:
    return StopLimitOrderRequest(
        symbol=symbol,
        qty=qty,
        side=side,
        time_in_force=TimeInForce.GTC,
        stop_price=stop_price,
        limit_price=limit_price,
        client_order_id=_cid(),
    )


def _order(client: TradingClient, order_id: Any) -> AlpacaOrder:
    return cast(AlpacaOrder, client.get_order_by_id(order_id))


def _prices(order: AlpacaOrder) -> tuple[float | None, float | None]:
    """Return (stop_price, limit_price) as numbers (alpaca-py keeps Alpaca's strings)."""
    stop, limit = order.stop_price, order.limit_price
    return (None if stop is None else float(stop)), (None if limit is None else float(limit))


def _price(exchange: Exchange, symbol: str, price: float) -> list[dict[str, Any]]:
    answer = exchange.control("POST", "price", {"symbol": symbol, "price": price})
    fills: list[dict[str, Any]] = answer["fills"]
    return fills


def test_stop_limit_is_created_listed_and_fetched_with_its_prices(
    client: TradingClient, exchange: Exchange
) -> None:
    _price(exchange, "AAPL", 100.0)
    request = _stop_limit("AAPL", OrderSide.BUY, 105.0, 106.0)

    created = cast(AlpacaOrder, client.submit_order(request))
    listed = cast(
        list[AlpacaOrder],
        client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=["AAPL"])),
    )
    by_client = cast(AlpacaOrder, client.get_order_by_client_id(_client_id(request)))
    status, raw = exchange.request("GET", f"/v2/orders/{created.id}")

    assert created.type == AlpacaOrderType.STOP_LIMIT
    assert created.client_order_id == request.client_order_id
    assert (created.status, _prices(created)) == ("new", (105.0, 106.0))
    assert [(o.id, _prices(o)) for o in listed] == [(created.id, (105.0, 106.0))]
    assert by_client.id == created.id
    assert status == 200
    assert (raw["type"], raw["order_type"]) == ("stop_limit", "stop_limit")
    assert (raw["stop_price"], raw["limit_price"]) == ("105", "106")
    client.cancel_order_by_id(created.id)


def test_stop_limit_triggers_on_a_price_move_and_fills_within_its_limit(
    client: TradingClient, exchange: Exchange
) -> None:
    _price(exchange, "MSFT", 100.0)
    placed = cast(
        AlpacaOrder, client.submit_order(_stop_limit("MSFT", OrderSide.BUY, 101.0, 101.5))
    )

    before = _price(exchange, "MSFT", 100.9)
    fills = _price(exchange, "MSFT", 101.2)
    filled = _order(client, placed.id)

    assert before == []
    assert [(f["client_order_id"], f["qty"], f["price"]) for f in fills] == [
        (placed.client_order_id, 10, 101.2)
    ]
    assert filled.status == "filled"
    assert float(filled.filled_qty or 0) == 10
    assert float(filled.filled_avg_price or 0) <= 101.5


def test_stop_limit_does_not_fill_when_the_price_gaps_past_its_limit(
    client: TradingClient, exchange: Exchange
) -> None:
    _price(exchange, "NVDA", 100.0)
    placed = cast(AlpacaOrder, client.submit_order(_stop_limit("NVDA", OrderSide.SELL, 95.0, 94.5)))

    gapped = _price(exchange, "NVDA", 93.0)
    resting = _order(client, placed.id)
    worse = _price(exchange, "NVDA", 94.0)
    within = _price(exchange, "NVDA", 94.8)

    assert gapped == []
    assert (resting.status, float(resting.filled_qty or 0)) == ("new", 0)
    assert worse == []
    assert [(f["client_order_id"], f["price"]) for f in within] == [(placed.client_order_id, 94.8)]
    assert _order(client, placed.id).status == "filled"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit_price": None}, "stop_limit order needs a positive limit_price"),
        ({"stop_price": None}, "stop_limit order needs a positive stop_price"),
        ({"limit_price": "0"}, "limit_price"),
        ({"stop_price": "abc"}, "stop_price: 'abc' is not a number"),
        ({"limit_price": "106.001"}, "sub-penny"),
        ({"type": "stop"}, "stop order must not carry a limit_price"),
        ({"type": "stoplimit"}, "is not one of market, limit, stop, stop_limit"),
    ],
)
def test_bad_stop_limit_requests_are_refused_with_422_and_nothing_is_created(
    exchange: Exchange, changes: dict[str, Any], message: str
) -> None:
    body: dict[str, Any] = {
        "symbol": "AMD",
        "qty": "1",
        "side": "buy",
        "type": "stop_limit",
        "time_in_force": "gtc",
        "stop_price": "105",
        "limit_price": "106",
        "client_order_id": _cid(),
    }
    body |= changes
    before = exchange.request("GET", "/v2/orders?status=all&limit=500")

    status, answer = exchange.request("POST", "/v2/orders", {k: v for k, v in body.items() if v})

    assert status == 422
    assert answer["code"] == 42210000
    assert message in answer["message"]
    missing, _ = exchange.request(
        "GET", f"/v2/orders:by_client_order_id?client_order_id={body['client_order_id']}"
    )
    assert missing == 404
    assert exchange.request("GET", "/v2/orders?status=all&limit=500") == before


def test_sdk_sees_a_bad_stop_limit_as_an_api_error_422(client: TradingClient) -> None:
    request = _stop_limit("AMD", OrderSide.SELL, 90.0, 89.999)

    with pytest.raises(APIError) as refused:
        client.submit_order(request)

    assert status_code(refused.value) == 422
    assert "sub-penny" in str(refused.value)
    with pytest.raises(APIError) as unknown:
        client.get_order_by_client_id(_client_id(request))
    assert status_code(unknown.value) == 404


def test_replace_moves_a_stop_limits_prices_and_refuses_a_limit_on_a_stop(
    client: TradingClient, exchange: Exchange
) -> None:
    _price(exchange, "TSLA", 100.0)
    placed = cast(AlpacaOrder, client.submit_order(_stop_limit("TSLA", OrderSide.SELL, 95.0, 94.0)))
    stop = cast(
        AlpacaOrder,
        client.submit_order(
            StopOrderRequest(
                symbol="TSLA",
                qty=1,
                side=OrderSide.SELL,
                time_in_force=TimeInForce.GTC,
                stop_price=90.0,
                client_order_id=_cid(),
            )
        ),
    )

    moved = cast(
        AlpacaOrder,
        client.replace_order_by_id(
            placed.id, ReplaceOrderRequest(stop_price=97.0, limit_price=96.5, qty=4)
        ),
    )
    with pytest.raises(APIError) as refused:
        client.replace_order_by_id(stop.id, ReplaceOrderRequest(limit_price=89.0))
    fills = _price(exchange, "TSLA", 96.8)

    assert (moved.id, moved.type) == (placed.id, AlpacaOrderType.STOP_LIMIT)
    assert (_prices(moved), float(moved.qty or 0)) == ((97.0, 96.5), 4)
    assert status_code(refused.value) == 422
    assert "no limit_price" in str(refused.value)
    assert _order(client, stop.id).limit_price is None
    assert [(f["client_order_id"], f["qty"], f["price"]) for f in fills] == [
        (placed.client_order_id, 4, 96.8)
    ]
    client.cancel_order_by_id(stop.id)
