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


async def _stop_partly_filled(venue: InstantVenue, filled: float) -> Order:
    """Return a 10-share stop of the venue of which ``filled`` shares filled."""
    resting = await _submitted(venue, "c-1", OrderType.STOP)
    await venue.fill_resting(resting.order_id, filled, 95.0)
    return venue.orders[resting.order_id]


async def test_a_resting_stop_fills_in_parts_as_a_real_venue_may() -> None:
    venue = InstantVenue()
    resting = await _submitted(venue, "c-1", OrderType.STOP)

    first = await venue.fill_resting(resting.order_id, 4.0, 95.0)
    partly = venue.orders[resting.order_id]
    still_open = await venue.open_orders()
    last = await venue.fill_resting(resting.order_id, 6.0, 94.5)
    done = venue.orders[resting.order_id]

    assert (first.qty, first.client_order_id, first.order_id) == (4.0, "c-1", resting.order_id)
    assert (partly.status, partly.qty, partly.filled_qty) == (OrderStatus.PARTIALLY_FILLED, 10, 4)
    assert still_open == [partly], "a partly filled stop still rests"
    assert (done.status, done.filled_qty, last.price) == (OrderStatus.FILLED, 10.0, 94.5)
    assert await venue.open_orders() == []
    assert done.avg_fill_price == pytest.approx((4 * 95.0 + 6 * 94.5) / 10)
    assert venue.positions_by_symbol[SYMBOL] == 10.0, "a buy stop adds what it filled"
    with pytest.raises(OrderRejected, match="is filled"):
        await venue.fill_resting(resting.order_id, 1.0, 95.0)


async def test_a_fill_above_what_rests_is_refused() -> None:
    venue = InstantVenue()
    partly = await _stop_partly_filled(venue, 4.0)

    with pytest.raises(OrderRejected, match=r"6\.0 of order"):
        await venue.fill_resting(partly.order_id, 7.0, 95.0)

    assert venue.orders[partly.order_id] == partly


async def test_a_replace_sets_the_orders_total_qty_above_what_filled() -> None:
    venue = InstantVenue()
    partly = await _stop_partly_filled(venue, 4.0)

    moved = await venue.replace(partly.order_id, stop_price=96.0, qty=7.0)

    assert (moved.qty, moved.filled_qty, moved.stop_price) == (7.0, 4.0, 96.0)
    assert (moved.order_id, moved.client_order_id) == (partly.order_id, "c-1")
    assert venue.orders[partly.order_id] == moved


@pytest.mark.parametrize("qty", [4.0, 3.0, 0.0])
async def test_a_replace_at_or_below_the_filled_qty_is_refused(qty: float) -> None:
    venue = InstantVenue()
    partly = await _stop_partly_filled(venue, 4.0)

    with pytest.raises(OrderRejected, match=r"above the filled qty 4\.0"):
        await venue.replace(partly.order_id, stop_price=96.0, qty=qty)

    assert venue.orders[partly.order_id] == partly


async def test_a_filled_or_canceled_stop_cannot_be_replaced() -> None:
    venue = InstantVenue()
    filled = await _stop_partly_filled(venue, 10.0)
    canceled = await _submitted(venue, "c-2", OrderType.STOP)
    await venue.cancel(canceled.order_id)

    for order in (filled, venue.orders[canceled.order_id]):
        with pytest.raises(OrderRejected, match=f"order {order.order_id} is not a resting stop"):
            await venue.replace(order.order_id, stop_price=96.0, qty=10.0)
        assert venue.orders[order.order_id] == order


async def test_only_a_stop_can_be_replaced_and_only_a_known_one() -> None:
    venue = InstantVenue(fill_market_orders=False)
    market = await _submitted(venue, "c-1", OrderType.MARKET)

    with pytest.raises(OrderRejected, match="is not a resting stop"):
        await venue.replace(market.order_id, stop_price=96.0)
    with pytest.raises(OrderNotFound):
        await venue.replace("IV-404", stop_price=96.0)


async def test_a_replace_without_qty_keeps_the_total_and_a_bad_stop_price_is_refused() -> None:
    venue = InstantVenue()
    partly = await _stop_partly_filled(venue, 4.0)

    moved = await venue.replace(partly.order_id, stop_price=96.0)
    with pytest.raises(OrderRejected, match="stop_price"):
        await venue.replace(partly.order_id, stop_price=0.0)

    assert (moved.qty, moved.filled_qty) == (10.0, 4.0)
    assert venue.orders[partly.order_id] == moved
