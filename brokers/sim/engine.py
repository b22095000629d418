"""The sim venue's matching engine: pure functions over a ``Book``.

Why it is built this way: the same engine runs embedded in the trader's process
and, later, behind a local exchange server, so it knows nothing of asyncio,
files or clocks. Every function takes the book and the market time, mutates the
book, and returns the events the venue must publish, in venue order. The shell
(``venue.py``) saves the book before it publishes those events, so whatever a
client has been told is on disk. Determinism: ids come from counters in the
book, prices from the book and the seeded bar generator; nothing reads the
wall clock or a global random generator.

Matching rules (a venue model, not a market microstructure):

* market orders fill at the last price once due (after the venue's latency);
  with ``max_fill_qty`` the first chunk fills then, and one more chunk at the
  open of each following bar;
* a bar first fills market order chunks, then triggers resting orders: a stop
  buy when high >= stop at max(stop, open), a stop sell when low <= stop at
  min(stop, open), a limit buy when low <= limit at min(limit, open), a limit
  sell when high >= limit at max(limit, open); a triggered order fills whole;
* a stop or limit that is already crossed when it arrives fills at once at the
  last price, as does one crossed by ``set_price``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, timedelta

import msgspec

from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerPosition,
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
    signed,
)
from brokers.sim.bars import BarGenerator

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
    "replace_stop",
    "scale_at",
    "set_price",
    "submit",
]

_EPS = 1e-9


class PriceScale(msgspec.Struct, frozen=True):
    """From bar slot ``since`` on, generated prices are multiplied by ``scale``."""

    since: datetime
    scale: float


class Instrument(msgspec.Struct, kw_only=True):
    """A tradable symbol: its last price and how generated bars map to its prices."""

    symbol: str
    last: float
    last_raw: float
    scales: list[PriceScale]


class Book(msgspec.Struct, kw_only=True):
    """Everything the venue knows; saved whole after every change."""

    account_id: str
    seed: int
    bar_seconds: int
    origin: date
    market_time: datetime
    next_bar: datetime
    instruments: dict[str, Instrument]
    positions: dict[str, BrokerPosition] = {}
    orders: dict[str, Order] = {}
    client_ids: dict[str, str] = {}
    market_due: dict[str, datetime] = {}
    executions: list[Execution] = []
    order_seq: int = 0
    exec_seq: int = 0
    manual_seq: int = 0


def new_book(
    *,
    account_id: str,
    generator: BarGenerator,
    start: datetime,
    base_prices: dict[str, float],
) -> Book:
    """Create the book of a fresh venue whose market opens at bar slot ``start``."""
    instruments = {}
    for symbol, base in sorted(base_prices.items()):
        instruments[symbol] = _new_instrument(generator, symbol, base, start)
    return Book(
        account_id=account_id,
        seed=generator.seed,
        bar_seconds=generator.bar_seconds,
        origin=generator.origin,
        market_time=start,
        next_bar=start,
        instruments=instruments,
    )


def add_instrument(book: Book, generator: BarGenerator, symbol: str, base: float) -> None:
    """List ``symbol`` at the venue (no-op when it is listed)."""
    if symbol not in book.instruments:
        book.instruments[symbol] = _new_instrument(generator, symbol, base, book.next_bar)


def _new_instrument(
    generator: BarGenerator, symbol: str, base: float, start: datetime
) -> Instrument:
    raw_open = generator.raw(symbol, start).open
    return Instrument(
        symbol=symbol,
        last=generator.bar(symbol, start, base).open,
        last_raw=raw_open,
        scales=[PriceScale(since=start, scale=base)],
    )


def scale_at(instrument: Instrument, ts: datetime) -> float:
    """Return the price scale in effect for the bar slot opening at ``ts``."""
    scale = instrument.scales[0].scale
    for entry in instrument.scales:
        if entry.since > ts:
            break
        scale = entry.scale
    return scale


# --- requests ---------------------------------------------------------------


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _validate(book: Book, request: OrderRequest) -> None:
    if not request.client_order_id:
        raise OrderRejected("client_order_id is empty")
    if request.client_order_id in book.client_ids:
        raise DuplicateClientOrderId(request.client_order_id)
    if request.symbol not in book.instruments:
        raise OrderRejected(f"unknown symbol {request.symbol!r}")
    if not _positive(request.qty):
        raise OrderRejected(f"qty {request.qty!r} is not a positive number")
    kind = request.type
    if kind is OrderType.STOP and not _positive(request.stop_price):
        raise OrderRejected(f"stop order needs a positive stop_price, got {request.stop_price!r}")
    if kind is OrderType.LIMIT and not _positive(request.limit_price):
        raise OrderRejected(
            f"limit order needs a positive limit_price, got {request.limit_price!r}"
        )
    if kind is not OrderType.STOP and request.stop_price is not None:
        raise OrderRejected(f"{kind} order must not carry a stop_price")
    if kind is not OrderType.LIMIT and request.limit_price is not None:
        raise OrderRejected(f"{kind} order must not carry a limit_price")


def submit(
    book: Book, request: OrderRequest, now: datetime, *, latency: timedelta
) -> tuple[Order, list[BrokerEvent]]:
    """Accept an order; a crossed stop or limit fills at once, a market order once due.

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
        qty=request.qty,
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
        events += _touch(book, [order], book.instruments[order.symbol].last, now)
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
    return [OrderUpdate(canceled)]


def replace_stop(
    book: Book, order_id: str, now: datetime, *, stop_price: float, qty: float | None = None
) -> tuple[Order, list[BrokerEvent]]:
    """Move a resting stop (and optionally its total qty); keep both of its ids.

    Raises ``OrderNotFound`` for an unknown id and ``OrderRejected`` when the order
    is not an open stop or the new values are bad.
    """
    order = _known(book, order_id)
    if order.type is not OrderType.STOP or not order.status.is_open:
        raise OrderRejected(
            f"order {order_id} is not a resting stop ({order.type}, {order.status})"
        )
    if not _positive(stop_price):
        raise OrderRejected(f"stop_price {stop_price!r} is not a positive number")
    new_qty = order.qty if qty is None else qty
    if not _positive(new_qty) or new_qty <= order.filled_qty + _EPS:
        raise OrderRejected(f"qty {qty!r} must exceed the filled qty {order.filled_qty}")
    replaced = msgspec.structs.replace(order, stop_price=stop_price, qty=new_qty, updated_at=now)
    book.orders[order_id] = replaced
    events: list[BrokerEvent] = [OrderUpdate(replaced)]
    events += _touch(book, [replaced], book.instruments[order.symbol].last, now)
    return book.orders[order_id], events


# --- the market -------------------------------------------------------------


def next_market_due(book: Book) -> datetime | None:
    """Return when the next accepted market order becomes fillable, if any."""
    return min(book.market_due.values(), default=None)


def fill_due_market_orders(
    book: Book, now: datetime, *, max_fill_qty: float | None
) -> list[BrokerEvent]:
    """Fill the first chunk of every market order due at ``now``, at the last price."""
    events: list[BrokerEvent] = []
    for order_id, due in sorted(book.market_due.items(), key=lambda item: (item[1], item[0])):
        if due > now:
            continue
        del book.market_due[order_id]
        order = book.orders[order_id]
        qty = _chunk(order, max_fill_qty)
        events += _fill(book, order, qty, book.instruments[order.symbol].last, now)
    return events


def advance_bar(
    book: Book, generator: BarGenerator, *, max_fill_qty: float | None
) -> list[BrokerEvent]:
    """Print the bar of slot ``book.next_bar`` for every instrument and move to the next slot.

    Per symbol the events are: fills the bar caused, then the ``Bar`` itself.
    """
    slot = book.next_bar
    stamp = slot + timedelta(seconds=generator.bar_seconds)
    events: list[BrokerEvent] = []
    for symbol, instrument in book.instruments.items():
        bar = generator.bar(symbol, slot, scale_at(instrument, slot))
        instrument.last_raw = generator.raw(symbol, slot).close
        for order in _open_for(book, symbol):
            if order.type is OrderType.MARKET and order.order_id not in book.market_due:
                events += _fill(book, order, _chunk(order, max_fill_qty), bar.open, stamp)
        events += _trigger(book, bar, stamp)
        instrument.last = bar.close
        events.append(bar)
    book.next_bar = generator.next_slot(slot)
    return events


def set_price(book: Book, symbol: str, price: float, now: datetime) -> list[BrokerEvent]:
    """Move ``symbol``'s price (an ops/test control); crossed resting orders fill at it.

    Raises ``OrderRejected`` for an unknown symbol or a bad price.
    """
    instrument = _instrument(book, symbol)
    if not _positive(price):
        raise OrderRejected(f"price {price!r} is not a positive number")
    scale = price / instrument.last_raw
    instrument.scales = [s for s in instrument.scales if s.since != book.next_bar]
    instrument.scales.append(PriceScale(since=book.next_bar, scale=scale))
    instrument.last = price
    return _touch(book, _open_for(book, symbol), price, now)


def manual_trade(
    book: Book, symbol: str, side: Side, qty: float, now: datetime
) -> tuple[Execution, list[BrokerEvent]]:
    """Trade by hand (as in the broker's app) at the last price.

    Raises ``OrderRejected`` for an unknown symbol or a bad qty.
    """
    _instrument(book, symbol)
    if not _positive(qty):
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
    events += _fill(book, order, qty, book.instruments[symbol].last, now)
    execution = next(e for e in reversed(events) if isinstance(e, Execution))
    return execution, events


def close_position(
    book: Book, symbol: str, now: datetime, *, cancel_orders: bool = False
) -> tuple[Execution | None, list[BrokerEvent]]:
    """Flatten ``symbol`` by hand; optionally cancel its open orders first."""
    _instrument(book, symbol)
    events: list[BrokerEvent] = []
    if cancel_orders:
        for order in _open_for(book, symbol):
            events += cancel(book, order.order_id, now)
    position = book.positions.get(symbol)
    if position is None:
        return None, events
    side = Side.SELL if position.qty > 0 else Side.BUY
    execution, more = manual_trade(book, symbol, side, abs(position.qty), now)
    return execution, events + more


# --- queries and housekeeping -------------------------------------------------


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


# --- internals ----------------------------------------------------------------


def _instrument(book: Book, symbol: str) -> Instrument:
    instrument = book.instruments.get(symbol)
    if instrument is None:
        raise OrderRejected(f"unknown symbol {symbol!r}")
    return instrument


def _open_for(book: Book, symbol: str) -> list[Order]:
    return [o for o in book.orders.values() if o.symbol == symbol and o.status.is_open]


def _remaining(order: Order) -> float:
    return order.qty - order.filled_qty


def _chunk(order: Order, max_fill_qty: float | None) -> float:
    remaining = _remaining(order)
    return remaining if max_fill_qty is None else min(remaining, max_fill_qty)


def _trigger_price(order: Order, bar: Bar) -> float | None:
    if order.type is OrderType.STOP and order.stop_price is not None:
        stop = order.stop_price
        if order.side is Side.BUY and bar.high >= stop:
            return max(stop, bar.open)
        if order.side is Side.SELL and bar.low <= stop:
            return min(stop, bar.open)
    if order.type is OrderType.LIMIT and order.limit_price is not None:
        limit = order.limit_price
        if order.side is Side.BUY and bar.low <= limit:
            return min(limit, bar.open)
        if order.side is Side.SELL and bar.high >= limit:
            return max(limit, bar.open)
    return None


def _trigger(book: Book, bar: Bar, ts: datetime) -> list[BrokerEvent]:
    events: list[BrokerEvent] = []
    for order in _open_for(book, bar.symbol):
        price = _trigger_price(order, bar)
        if price is not None:
            events += _fill(book, order, _remaining(order), price, ts)
    return events


def _touch(book: Book, orders: Iterable[Order], price: float, ts: datetime) -> list[BrokerEvent]:
    """Trigger ``orders`` against a single trade at ``price``."""
    events: list[BrokerEvent] = []
    for order in orders:
        current = book.orders[order.order_id]
        if not current.status.is_open or current.type is OrderType.MARKET:
            continue
        tick = Bar(
            symbol=current.symbol, ts=ts, open=price, high=price, low=price, close=price, volume=0.0
        )
        fill_price = _trigger_price(current, tick)
        if fill_price is not None:
            events += _fill(book, current, _remaining(current), fill_price, ts)
    return events


def _fill(book: Book, order: Order, qty: float, price: float, ts: datetime) -> list[BrokerEvent]:
    book.exec_seq += 1
    execution = Execution(
        exec_id=f"SIM-E{book.exec_seq:07d}",
        order_id=order.order_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        qty=qty,
        price=price,
        ts=ts,
    )
    execution.validate()
    book.executions.append(execution)
    _apply_to_position(book, execution)
    filled = order.filled_qty + qty
    avg = ((order.avg_fill_price or 0.0) * order.filled_qty + price * qty) / filled
    done = filled >= order.qty - _EPS
    updated = msgspec.structs.replace(
        order,
        filled_qty=order.qty if done else filled,
        avg_fill_price=avg,
        status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED,
        updated_at=ts,
    )
    book.orders[order.order_id] = updated
    return [execution, OrderUpdate(updated)]


def _apply_to_position(book: Book, execution: Execution) -> None:
    position = book.positions.get(execution.symbol)
    old = position.qty if position else 0.0
    avg = position.avg_price if position else 0.0
    delta = signed(execution.side, execution.qty)
    new = round(old + delta, 9)
    if abs(new) < _EPS:
        book.positions.pop(execution.symbol, None)
        return
    if old == 0.0 or (old > 0) == (delta > 0):
        avg = (abs(old) * avg + execution.qty * execution.price) / abs(new)
    elif (old > 0) != (new > 0):
        avg = execution.price
    book.positions[execution.symbol] = BrokerPosition(
        symbol=execution.symbol, qty=new, avg_price=avg
    )
