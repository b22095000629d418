"""The sim venue's matching engine: pure functions over a ``Book``.

Why it is built this way: the same engine runs embedded in the trader's process
and, later, behind a local exchange server, so it knows nothing of asyncio,
files or clocks. Every function takes the book and the market time, mutates the
book, and returns the events the venue must publish, in venue order; a request
that is refused raises before it changes anything. The shell (``venue.py``)
saves the book before it publishes those events, so whatever a client has been
told is on disk. Determinism: ids come from counters in the book, prices from
the book and the seeded bar generator; nothing reads the wall clock or a global
random generator.

This module holds requests, hand actions and queries; ``matching.py`` holds how
the market fills (re-exported here, so ``engine`` is the one name to import).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from brokers.base import (
    BrokerEvent,
    DuplicateClientOrderId,
    Execution,
    Order,
    OrderNotFound,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)
from brokers.sim.matching import (
    EPS,
    advance_bar,
    fill,
    fill_due_market_orders,
    instrument_of,
    is_triggered_stop,
    next_market_due,
    open_orders_of,
    positive,
    set_price,
    touch,
)
from brokers.sim.model import Book, Instrument, PriceScale, add_instrument, new_book, scale_at

__all__ = [
    "Book",
    "Instrument",
    "PriceScale",
    "add_instrument",
    "advance_bar",
    "cancel",
    "close_position",
    "executions_since",
    "fill_due_market_orders",
    "manual_trade",
    "new_book",
    "next_market_due",
    "open_orders",
    "prune",
    "replace_order",
    "replace_stop",
    "scale_at",
    "set_price",
    "submit",
]


_PRICES = {
    OrderType.MARKET: (False, False),
    OrderType.LIMIT: (False, True),
    OrderType.STOP: (True, False),
    OrderType.STOP_LIMIT: (True, True),
}
"""Whether each order type carries (stop_price, limit_price)."""


def _validate(book: Book, request: OrderRequest) -> None:
    if not request.client_order_id:
        raise OrderRejected("client_order_id is empty")
    if request.client_order_id in book.client_ids:
        raise DuplicateClientOrderId(request.client_order_id)
    instrument_of(book, request.symbol)
    if not positive(request.qty):
        raise OrderRejected(f"qty {request.qty!r} is not a positive number")
    kind = request.type
    stop_needed, limit_needed = _PRICES[kind]
    if stop_needed and not positive(request.stop_price):
        raise OrderRejected(f"{kind} order needs a positive stop_price, got {request.stop_price!r}")
    if limit_needed and not positive(request.limit_price):
        raise OrderRejected(
            f"{kind} order needs a positive limit_price, got {request.limit_price!r}"
        )
    if not stop_needed and request.stop_price is not None:
        raise OrderRejected(f"{kind} order must not carry a stop_price")
    if not limit_needed and request.limit_price is not None:
        raise OrderRejected(f"{kind} order must not carry a limit_price")


def submit(
    book: Book,
    request: OrderRequest,
    now: datetime,
    *,
    latency: timedelta,
    max_fill_qty: float | None = None,
) -> tuple[Order, list[BrokerEvent]]:
    """Accept an order; a crossed stop, limit or stop-limit fills at once, a market order once due.

    Raises ``DuplicateClientOrderId`` for a known client order id and
    ``OrderRejected`` for an order the venue cannot take.
    """
    _validate(book, request)
    book.order_seq += 1
    order = Order(
        order_id=f"SIM-O{book.order_seq:07d}",
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        qty=float(request.qty),
        type=request.type,
        status=OrderStatus.NEW,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        created_at=now,
        updated_at=now,
    )
    book.orders[order.order_id] = order
    book.client_ids[order.client_order_id] = order.order_id
    events: list[BrokerEvent] = [OrderUpdate(order)]
    if order.type is OrderType.MARKET:
        book.market_due[order.order_id] = now + latency
    else:
        last = book.instruments[order.symbol].last
        events += touch(book, [order], last, now, max_fill_qty=max_fill_qty)
    return book.orders[order.order_id], events


def _known(book: Book, order_id: str) -> Order:
    order = book.orders.get(order_id)
    if order is None:
        raise OrderNotFound(f"unknown order {order_id!r}")
    return order


def cancel(book: Book, order_id: str, now: datetime) -> list[BrokerEvent]:
    """Cancel an open order; canceling a canceled order does nothing.

    Raises ``OrderNotFound`` for an unknown id and ``OrderRejected`` for a filled order.
    """
    order = _known(book, order_id)
    if order.status is OrderStatus.CANCELED:
        return []
    if not order.status.is_open:
        raise OrderRejected(f"order {order_id} is {order.status}, it cannot be canceled")
    canceled = msgspec.structs.replace(order, status=OrderStatus.CANCELED, updated_at=now)
    book.orders[order_id] = canceled
    book.market_due.pop(order_id, None)
    book.stop_triggered.pop(order_id, None)
    return [OrderUpdate(canceled)]


def replace_stop(
    book: Book,
    order_id: str,
    now: datetime,
    *,
    stop_price: float,
    qty: float | None = None,
    max_fill_qty: float | None = None,
) -> tuple[Order, list[BrokerEvent]]:
    """Move a resting stop (and optionally its total qty); keep both of its ids.

    A stop moved across the last price fills at once. Raises ``OrderNotFound``
    for an unknown id and ``OrderRejected`` when the order is not an open stop
    or the new values are bad.
    """
    order = _known(book, order_id)
    if order.type is not OrderType.STOP or not order.status.is_open:
        raise OrderRejected(
            f"order {order_id} is not a resting stop ({order.type}, {order.status})"
        )
    return replace_order(
        book, order_id, now, stop_price=stop_price, qty=qty, max_fill_qty=max_fill_qty
    )


def replace_order(
    book: Book,
    order_id: str,
    now: datetime,
    *,
    stop_price: float | None = None,
    limit_price: float | None = None,
    qty: float | None = None,
    max_fill_qty: float | None = None,
) -> tuple[Order, list[BrokerEvent]]:
    """Change a resting stop, limit or stop-limit order's prices or total qty; keep its ids.

    ``None`` keeps a value. An order moved across the last price fills at once; a
    stop-limit whose stop already traded stays triggered. Raises ``OrderNotFound``
    for an unknown id and ``OrderRejected`` when the order is not open, is a market
    order, or a value is bad or a price its type does not carry.
    """
    order = _known(book, order_id)
    if order.type is OrderType.MARKET or not order.status.is_open:
        raise OrderRejected(
            f"order {order_id} is not a resting stop, limit or stop_limit order "
            f"({order.type}, {order.status})"
        )
    if is_triggered_stop(book, order):
        raise OrderRejected(
            f"stop {order_id} has triggered and is filling ({order.filled_qty} of {order.qty}): "
            "it can be canceled, not changed"
        )
    stop_carried, limit_carried = _PRICES[order.type]
    for name, price, carried in (
        ("stop_price", stop_price, stop_carried),
        ("limit_price", limit_price, limit_carried),
    ):
        if price is None:
            continue
        if not carried:
            raise OrderRejected(f"order {order_id} is a {order.type} order: it has no {name}")
        if not positive(price):
            raise OrderRejected(f"{name} {price!r} is not a positive number")
    new_qty = order.qty if qty is None else float(qty)
    if not positive(new_qty) or new_qty <= order.filled_qty + EPS:
        raise OrderRejected(f"qty {qty!r} must be a number above the filled qty {order.filled_qty}")
    replaced = msgspec.structs.replace(
        order,
        stop_price=order.stop_price if stop_price is None else stop_price,
        limit_price=order.limit_price if limit_price is None else limit_price,
        qty=new_qty,
        updated_at=now,
    )
    book.orders[order_id] = replaced
    events: list[BrokerEvent] = [OrderUpdate(replaced)]
    last = book.instruments[order.symbol].last
    events += touch(book, [replaced], last, now, max_fill_qty=max_fill_qty)
    return book.orders[order_id], events


def manual_trade(
    book: Book, symbol: str, side: Side, qty: float, now: datetime
) -> tuple[Execution, list[BrokerEvent]]:
    """Trade by hand (as in the broker's app) at the last price; client id ``manual-<n>``.

    Raises ``OrderRejected`` for an unknown symbol or a bad qty.
    """
    instrument_of(book, symbol)
    if not positive(qty):
        raise OrderRejected(f"qty {qty!r} is not a positive number")
    client_order_id = ""
    while not client_order_id or client_order_id in book.client_ids:
        book.manual_seq += 1
        client_order_id = f"manual-{book.manual_seq}"
    request = OrderRequest(
        client_order_id=client_order_id, symbol=symbol, side=side, qty=qty, type=OrderType.MARKET
    )
    order, events = submit(book, request, now, latency=timedelta(0))
    del book.market_due[order.order_id]
    fills = fill(book, order, order.qty, book.instruments[symbol].last, now)
    execution = fills[0]
    assert isinstance(execution, Execution)
    return execution, events + fills


def close_position(
    book: Book, symbol: str, now: datetime, *, cancel_orders: bool = False
) -> tuple[Execution | None, list[BrokerEvent]]:
    """Flatten ``symbol`` by hand (``None`` when flat); optionally cancel its open orders first.

    Raises ``OrderRejected`` for an unknown symbol.
    """
    instrument_of(book, symbol)
    events: list[BrokerEvent] = []
    if cancel_orders:
        for order in open_orders_of(book, symbol):
            events += cancel(book, order.order_id, now)
    position = book.positions.get(symbol)
    if position is None:
        return None, events
    side = Side.SELL if position.qty > 0 else Side.BUY
    execution, more = manual_trade(book, symbol, side, abs(position.qty), now)
    return execution, events + more


def open_orders(book: Book) -> list[Order]:
    """Return the open orders in the order they arrived."""
    return [o for o in book.orders.values() if o.status.is_open]


def executions_since(book: Book, since: datetime) -> list[Execution]:
    """Return every execution with ``ts >= since``, oldest first."""
    return [e for e in book.executions if e.ts >= since]


def prune(book: Book, before: datetime) -> None:
    """Forget executions and closed orders older than ``before`` (keeps the book small)."""
    book.executions = [e for e in book.executions if e.ts >= before]
    for order_id, order in list(book.orders.items()):
        updated = order.updated_at or order.created_at
        if not order.status.is_open and updated is not None and updated < before:
            del book.orders[order_id]
            book.client_ids.pop(order.client_order_id, None)
    for order_id in list(book.stop_triggered):
        kept = book.orders.get(order_id)
        if kept is None or not kept.status.is_open:
            del book.stop_triggered[order_id]
