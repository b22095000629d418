"""The parts of alpaca-py the adapter uses, imported in one place.

Why: alpaca-py 0.44 imports ``websockets.legacy``, which warns with a
``DeprecationWarning`` at import; that warning is the SDK's, not ours, so it is
silenced here, for that message only, while the SDK loads. Everything else of
alpaca-py is reached through this module, so the warning never escapes (tests
run with warnings as errors).

The streams' connection steps (``_start_ws``, ``_consume``,
``_send_subscribe_msg``) are private SDK methods: the adapter drives them itself
because the SDK's own loop (``_run_forever``) gives no hook for "connection
lost" or "connection back", which the runtime must hear about to suspend,
backfill and reconcile. They are typed here, once, with precise ``Callable``s.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import cast

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message=r"websockets\.legacy is deprecated", category=DeprecationWarning
    )
    from alpaca.common.enums import Sort
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import DataFeed
    from alpaca.data.historical.stock import StockHistoricalDataClient
    from alpaca.data.live.stock import StockDataStream
    from alpaca.data.models.bars import Bar as AlpacaBar
    from alpaca.data.models.bars import BarSet
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import (
        OrderSide,
        QueryOrderStatus,
        TimeInForce,
    )
    from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus
    from alpaca.trading.enums import OrderType as AlpacaOrderType
    from alpaca.trading.models import Order as AlpacaOrder
    from alpaca.trading.models import Position, TradeAccount, TradeActivity, TradeUpdate
    from alpaca.trading.requests import (
        GetOrdersRequest,
        LimitOrderRequest,
        MarketOrderRequest,
        ReplaceOrderRequest,
        StopLimitOrderRequest,
        StopOrderRequest,
    )
    from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest
    from alpaca.trading.stream import TradingStream
    from websockets.exceptions import WebSocketException

__all__ = [
    "APIError",
    "AlpacaBar",
    "AlpacaOrder",
    "AlpacaOrderRequest",
    "AlpacaOrderStatus",
    "AlpacaOrderType",
    "BarSet",
    "DataFeed",
    "GetOrdersRequest",
    "LimitOrderRequest",
    "MarketOrderRequest",
    "OrderSide",
    "Position",
    "QueryOrderStatus",
    "ReplaceOrderRequest",
    "Sort",
    "StockBarsRequest",
    "StockDataStream",
    "StockHistoricalDataClient",
    "StopLimitOrderRequest",
    "StopOrderRequest",
    "TimeFrame",
    "TimeInForce",
    "TradeAccount",
    "TradeActivity",
    "TradeUpdate",
    "TradingClient",
    "TradingStream",
    "WebSocketException",
    "consume",
    "send_subscriptions",
    "start",
    "status_code",
]


def start(stream: TradingStream | StockDataStream) -> Awaitable[None]:
    """Connect, authenticate (and, for trade updates, listen): one attempt, raises on failure."""
    step: Callable[[], Awaitable[None]] = stream._start_ws
    return step()


def consume(stream: TradingStream | StockDataStream) -> Awaitable[object]:
    """Read and dispatch frames until the connection fails (it raises then)."""
    step: Callable[[], Awaitable[object]] = stream._consume
    return step()


def send_subscriptions(stream: StockDataStream) -> Awaitable[None]:
    """Send the data stream's current subscriptions (all symbols with a handler)."""
    step: Callable[[], Awaitable[None]] = stream._send_subscribe_msg
    return step()


def status_code(error: APIError) -> int | None:
    """Return the HTTP status of an ``APIError`` (``None`` when there was no response)."""
    return cast(int | None, error.status_code)
