"""The local exchange driven by the real alpaca-py clients over loopback.

One exchange process serves the module (started on a free port); tests that
change positions use their own symbol so they do not see each other's trades.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from brokers.alpaca.connection import cancel_and_wait
from brokers.alpaca.sdk import (
    AlpacaOrder,
    APIError,
    BarSet,
    DataFeed,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    OrderSide,
    Position,
    QueryOrderStatus,
    ReplaceOrderRequest,
    Sort,
    StockBarsRequest,
    StockDataStream,
    StockHistoricalDataClient,
    StopOrderRequest,
    TimeFrame,
    TimeInForce,
    TradeAccount,
    TradeActivity,
    TradingClient,
    TradingStream,
    status_code,
)
from tests.unit.exchange.exchange_kit import KEY, SECRET, Exchange, running_exchange, wait_until

SYMBOLS = "AAPL,MSFT,NVDA,AMD,TSLA,SPY,QQQ,IWM"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    state = tmp_path_factory.mktemp("exchange") / "exchange.book"
    with running_exchange(state, speed=60.0, symbols=SYMBOLS) as running:
        yield running


@pytest.fixture
def client(exchange: Exchange) -> TradingClient:
    return TradingClient(KEY, SECRET, paper=True, url_override=exchange.rest_url)


def _cid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _order(client: TradingClient, order_id: str) -> AlpacaOrder:
    return cast(AlpacaOrder, client.get_order_by_id(order_id))


def _filled(client: TradingClient, order_id: str) -> AlpacaOrder:
    wait_until(lambda: _order(client, order_id).status == "filled", 10, f"{order_id} filled")
    return _order(client, order_id)


def _buy(client: TradingClient, symbol: str, qty: float) -> AlpacaOrder:
    request = MarketOrderRequest(
        symbol=symbol,
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=_cid(),
    )
    return cast(AlpacaOrder, client.submit_order(request))


def test_prints_one_line_per_endpoint(exchange: Exchange, tmp_path: Path) -> None:
    other = Exchange(tmp_path / "other.book")
    lines = other.start()
    try:
        assert lines == [
            f"alpaca-rest http://127.0.0.1:{other.port}",
            f"trade-stream ws://127.0.0.1:{other.port}/stream",
            f"data-stream ws://127.0.0.1:{other.port}/v2/iex",
        ]
        assert other.port not in (0, exchange.port)
    finally:
        assert other.stop() == 0


def test_account(client: TradingClient) -> None:
    account = cast(TradeAccount, client.get_account())

    assert account.account_number == "SIM-PAPER"
    assert account.status == "ACTIVE"
    assert float(account.cash or 0) > 0


def test_market_order_fills_into_a_position(client: TradingClient) -> None:
    submitted = _buy(client, "AAPL", 10)

    filled = _filled(client, str(submitted.id))
    positions = {p.symbol: p for p in cast(list[Position], client.get_all_positions())}
    one = cast(Position, client.get_open_position("AAPL"))

    assert submitted.status == "new"
    assert float(filled.filled_qty or 0) == 10
    assert float(positions["AAPL"].qty) == 10
    assert one.side == "long"
    assert float(one.avg_entry_price) == float(filled.filled_avg_price or 0)
    by_client = cast(AlpacaOrder, client.get_order_by_client_id(submitted.client_order_id))
    assert by_client.id == submitted.id


def test_duplicate_client_order_id_is_refused_with_422(client: TradingClient) -> None:
    request = LimitOrderRequest(
        symbol="MSFT",
        qty=1,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.GTC,
        limit_price=1.0,
        client_order_id=_cid(),
    )
    first = cast(AlpacaOrder, client.submit_order(request))

    with pytest.raises(APIError) as refused:
        client.submit_order(request)

    assert status_code(refused.value) == 422
    assert refused.value.code == 40010001
    open_ids = [
        o.id
        for o in cast(
            list[AlpacaOrder],
            client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=["MSFT"])),
        )
        if o.client_order_id == request.client_order_id
    ]
    assert open_ids == [first.id]
    client.cancel_order_by_id(first.id)


def test_stop_rests_moves_and_cancels(client: TradingClient) -> None:
    request = StopOrderRequest(
        symbol="NVDA",
        qty=5,
        side=OrderSide.SELL,
        time_in_force=TimeInForce.GTC,
        stop_price=1.0,
        client_order_id=_cid(),
    )
    stop = cast(AlpacaOrder, client.submit_order(request))

    moved = cast(
        AlpacaOrder, client.replace_order_by_id(stop.id, ReplaceOrderRequest(stop_price=2.0))
    )
    client.cancel_order_by_id(stop.id)
    canceled = _order(client, str(stop.id))

    assert stop.status == "new"
    assert stop.type == "stop"
    assert float(moved.stop_price or 0) == 2.0
    assert canceled.status == "canceled"


def test_cancel_all_and_order_filters(client: TradingClient) -> None:
    ids = []
    for price in (1.0, 2.0, 3.0):
        request = LimitOrderRequest(
            symbol="AMD",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=price,
            client_order_id=_cid(),
        )
        ids.append(cast(AlpacaOrder, client.submit_order(request)).id)

    asc = cast(
        list[AlpacaOrder],
        client.get_orders(
            GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=["AMD"], direction=Sort.ASC)
        ),
    )
    limited = cast(
        list[AlpacaOrder],
        client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=["AMD"], limit=2)),
    )
    client.cancel_orders()
    closed = cast(
        list[AlpacaOrder],
        client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=["AMD"])),
    )

    assert [o.id for o in asc] == ids
    assert [o.id for o in limited] == ids[::-1][:2]
    assert {o.id for o in closed} >= set(ids)
    assert all(o.status == "canceled" for o in closed if o.id in ids)


def test_close_position(client: TradingClient) -> None:
    _filled(client, str(_buy(client, "TSLA", 3).id))

    closing = cast(AlpacaOrder, client.close_position("TSLA"))

    assert closing.side == "sell"
    assert float(closing.qty or 0) == 3
    with pytest.raises(APIError) as flat:
        client.get_open_position("TSLA")
    assert status_code(flat.value) == 404


def test_fill_activities_page_and_match_the_ground_truth(
    client: TradingClient, exchange: Exchange
) -> None:
    for _ in range(3):
        _filled(client, str(_buy(client, "SPY", 1).id))

    rows: list[dict[str, Any]] = []
    token = None
    while True:
        params: dict[str, Any] = {"direction": "asc", "page_size": 2}
        if token:
            params["page_token"] = token
        page = cast(list[dict[str, Any]], client.get("/account/activities/FILL", params))
        rows += page
        if len(page) < 2:
            break
        token = page[-1]["id"]
    activities = [TradeActivity(**row) for row in rows]
    last = activities[-1]
    after = cast(
        list[dict[str, Any]],
        client.get("/account/activities/FILL", {"after": last.transaction_time.isoformat()}),
    )

    truth = exchange.executions()
    assert [a.id.rpartition("::")[2] for a in activities] == [e["exec_id"] for e in truth]
    assert all(a.activity_type == "FILL" for a in activities)
    assert after == []


async def test_trade_stream_receives_new_and_fill(
    client: TradingClient, exchange: Exchange
) -> None:
    updates: asyncio.Queue[Any] = asyncio.Queue()
    stream = TradingStream(KEY, SECRET, paper=True, url_override=exchange.stream_url)

    async def on_update(update: Any) -> None:
        await updates.put(update)

    stream.subscribe_trade_updates(on_update)
    runner = asyncio.create_task(_run_forever(stream))
    try:
        # The listen frame races the first order: send orders until one's "new" is heard,
        # then follow that order (updates of the others are skipped).
        heard: list[Any] = []
        for _ in range(50):
            order = await asyncio.to_thread(_buy, client, "QQQ", 2)
            with contextlib.suppress(TimeoutError):
                while True:
                    update = await asyncio.wait_for(updates.get(), 0.5)
                    if update.order.id == order.id and str(update.event) == "new":
                        heard.append(update)
                        break
            if heard:
                break
        while str(heard[-1].event) != "fill":
            update = await asyncio.wait_for(updates.get(), 10)
            if update.order.id == heard[0].order.id:
                heard.append(update)

        assert [str(u.event) for u in heard] == ["new", "fill"]
        fill = heard[-1]
        assert fill.execution_id is not None
        assert float(fill.qty) == 2
        assert fill.price > 0
    finally:
        await _stop(runner, stream)


async def test_data_stream_receives_a_bar(exchange: Exchange) -> None:
    bars: asyncio.Queue[Any] = asyncio.Queue()
    stream = StockDataStream(KEY, SECRET, feed=DataFeed.IEX, url_override=exchange.data_url)

    async def on_bar(bar: Any) -> None:
        await bars.put(bar)

    stream.subscribe_bars(on_bar, "AAPL")
    runner = asyncio.create_task(_run_forever(stream))
    try:
        bar = await asyncio.wait_for(bars.get(), 15)
        assert bar.symbol == "AAPL"
        assert bar.low <= bar.open <= bar.high
        assert bar.volume >= 0
        assert bar.timestamp.tzinfo is not None
    finally:
        await _stop(runner, stream)


def test_history_bars_parse(exchange: Exchange, client: TradingClient) -> None:
    history = StockHistoricalDataClient(KEY, SECRET, url_override=exchange.rest_url)
    now = _market_time(exchange)
    wait_until(
        lambda: now + timedelta(minutes=3) <= _market_time(exchange), 20, "three bars printed"
    )

    barset = cast(
        BarSet,
        history.get_stock_bars(
            StockBarsRequest(
                symbol_or_symbols=["AAPL", "MSFT"],
                timeframe=TimeFrame.Minute,
                start=now - timedelta(hours=1),
                end=now + timedelta(minutes=3),
            )
        ),
    )
    limited = cast(
        BarSet,
        history.get_stock_bars(
            StockBarsRequest(
                symbol_or_symbols="AAPL",
                timeframe=TimeFrame.Minute,
                start=now - timedelta(hours=1),
                limit=2,
            )
        ),
    )

    assert set(barset.data) == {"AAPL", "MSFT"}
    aapl = barset.data["AAPL"]
    assert len(aapl) >= 3
    assert all(b.timestamp < b2.timestamp for b, b2 in itertools.pairwise(aapl))
    assert len(limited.data["AAPL"]) == 2


def _market_time(exchange: Exchange) -> datetime:
    stamp: str = exchange.control("GET", "clock")["timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _run_forever(stream: TradingStream | StockDataStream) -> Coroutine[Any, Any, None]:
    """The SDK's own loop (typed here: alpaca-py leaves ``TradingStream._run_forever`` bare)."""
    run: Callable[[], Coroutine[Any, Any, None]] = stream._run_forever
    return run()


async def _stop(runner: asyncio.Task[None], stream: TradingStream | StockDataStream) -> None:
    """Stop an SDK stream now (its own ``stop_ws`` waits up to 5 s for a receive timeout)."""
    await cancel_and_wait(runner)
    await stream.close()
