"""``bench._world.InstantVenue``: the in-process broker of the benchmarks and actor tests.

Where it answers, it answers as the embedded sim venue (``brokers.sim``) does, so
an actor tested against it meets the refusals it meets there.
"""

from __future__ import annotations

import pytest

from bench._world import InstantVenue
from brokers.base import (
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
)

SYMBOL = "AAPL"


async def _submitted(venue: InstantVenue, client_order_id: str, type_: OrderType) -> Order:
    stop_price = 95.0 if type_ is OrderType.STOP else None
    request = OrderRequest(client_order_id, SYMBOL, Side.BUY, 10.0, type_, stop_price=stop_price)
    return await venue.submit(request)


async def test_a_filled_order_cannot_be_canceled() -> None:
    venue = InstantVenue()
    venue.last[SYMBOL] = 100.0
    filled = await _submitted(venue, "c-1", OrderType.MARKET)
    assert filled.status is OrderStatus.FILLED

    with pytest.raises(OrderRejected, match=f"order {filled.order_id} is filled"):
        await venue.cancel(filled.order_id)

    assert venue.orders[filled.order_id] == filled, "the filled order stays filled"
    assert await venue.order_by_client_id("c-1") == filled


async def test_a_resting_order_cancels_once_and_again_changes_nothing() -> None:
    venue = InstantVenue()
    resting = await _submitted(venue, "c-1", OrderType.STOP)

    await venue.cancel(resting.order_id)
    canceled = venue.orders[resting.order_id]
    await venue.cancel(resting.order_id)

    assert canceled.status is OrderStatus.CANCELED
    assert venue.orders[resting.order_id] == canceled
    assert await venue.open_orders() == []


async def test_an_unknown_order_cannot_be_canceled() -> None:
    with pytest.raises(OrderNotFound):
        await InstantVenue().cancel("IV-404")
