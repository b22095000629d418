"""Matching: how the market fills orders, as pure functions over a ``Book``.

Rules (a venue model, not a market microstructure):

* market orders fill at the last price once due (after the venue's latency);
  with ``max_fill_qty`` the first chunk fills then, and one more chunk at the
  open of each following bar;
* a bar first fills market order chunks, then triggers resting orders: a stop
  buy when high >= stop at max(stop, open), a stop sell when low <= stop at
  min(stop, open), a limit buy when low <= limit at min(limit, open), a limit
  sell when high >= limit at max(limit, open); a triggered order fills whole,
  except that a triggered stop is a market order from then on: with
  ``max_fill_qty`` its first chunk fills at the trigger price and one more
  at the open of each following bar, as market orders do (``stop_triggered``
  holds it meanwhile; it can be canceled, not moved, and no price touches it);
* a stop-limit triggers like a stop (buy when high >= stop, sell when low <= stop,
  at the same trigger price); it fills at once, at that trigger price, only when
  the trigger price is within its limit; otherwise (the price gapped past the
  limit) it rests from then on as a limit at its limit price, never filling worse;
* a stop, limit or stop-limit that is already crossed when it arrives fills at
  once at the last price, as does one crossed by ``set_price`` (a stop: its
  first chunk, as above).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerPosition,
    Execution,
    Order,
    OrderRejected,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    signed,
)
from brokers.sim.bars import BarGenerator
from brokers.sim.model import Book, Instrument, PriceScale, scale_at

__all__ = [
    "advance_bar",
    "fill",
    "fill_due_market_orders",
    "instrument_of",
    "next_market_due",
    "open_orders_of",
    "positive",
    "set_price",
    "touch",
]

EPS = 1e-9


def positive(value: float | None) -> bool:
    """Return whether ``value`` is a finite number > 0."""
    return value is not None and math.isfinite(value) and value > 0


def instrument_of(book: Book, symbol: str) -> Instrument:
    """Return ``symbol``'s instrument; raise ``OrderRejected`` when the venue does not list it."""
    instrument = book.instruments.get(symbol)
    if instrument is None:
        raise OrderRejected(f"unknown symbol {symbol!r}")
    return instrument


def open_orders_of(book: Book, symbol: str) -> list[Order]:
    """Return ``symbol``'s open orders in the order they arrived."""
    return [o for o in book.orders.values() if o.symbol == symbol and o.status.is_open]


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
        events += fill(
            book, order, _chunk(order, max_fill_qty), book.instruments[order.symbol].last, now
        )
    return events


def advance_bar(
    book: Book, generator: BarGenerator, *, max_fill_qty: float | None
) -> list[BrokerEvent]:
    """Print the bar of slot ``book.next_bar`` for every instrument and move to the next slot.

    Per symbol the events are: the fills the bar caused, then the ``Bar`` itself.
    Fills are stamped with the bar's end.
    """
    slot = book.next_bar
    stamp = slot + timedelta(seconds=generator.bar_seconds)
    events: list[BrokerEvent] = []
    for symbol, instrument in book.instruments.items():
        bar = generator.bar(symbol, slot, scale_at(instrument, slot))
        instrument.last_raw = generator.raw(symbol, slot).close
        for order in open_orders_of(book, symbol):
            if (
                order.type is OrderType.MARKET and order.order_id not in book.market_due
            ) or is_triggered_stop(book, order):
                events += fill(book, order, _chunk(order, max_fill_qty), bar.open, stamp)
        for order in open_orders_of(book, symbol):
            if is_triggered_stop(book, order):
                continue  # filled as a market order above
            price = _trigger_price(book, order, bar, stamp)
            if price is not None:
                events += _fill_triggered(book, order, price, stamp, max_fill_qty)
        instrument.last = bar.close
        events.append(bar)
    book.next_bar = generator.next_slot(slot)
    return events


def set_price(
    book: Book, symbol: str, price: float, now: datetime, *, max_fill_qty: float | None = None
) -> list[BrokerEvent]:
    """Move ``symbol``'s price (an ops/test control); crossed resting orders fill at it.

    Later bars continue from ``price``. Raises ``OrderRejected`` for an unknown
    symbol or a bad price.
    """
    instrument = instrument_of(book, symbol)
    if not positive(price):
        raise OrderRejected(f"price {price!r} is not a positive number")
    scale = price / instrument.last_raw
    instrument.scales = [s for s in instrument.scales if s.since != book.next_bar]
    instrument.scales.append(PriceScale(since=book.next_bar, scale=scale))
    instrument.last = price
    return touch(book, open_orders_of(book, symbol), price, now, max_fill_qty=max_fill_qty)


def touch(
    book: Book,
    orders: Iterable[Order],
    price: float,
    ts: datetime,
    *,
    max_fill_qty: float | None = None,
) -> list[BrokerEvent]:
    """Trigger resting ``orders`` against one trade at ``price``."""
    events: list[BrokerEvent] = []
    for order in orders:
        current = book.orders[order.order_id]
        if (
            not current.status.is_open
            or current.type is OrderType.MARKET
            or is_triggered_stop(book, current)
        ):
            continue
        tick = Bar(
            symbol=current.symbol, ts=ts, open=price, high=price, low=price, close=price, volume=0.0
        )
        fill_price = _trigger_price(book, current, tick, ts)
        if fill_price is not None:
            events += _fill_triggered(book, current, fill_price, ts, max_fill_qty)
    return events


def _fill_triggered(
    book: Book, order: Order, price: float, ts: datetime, max_fill_qty: float | None
) -> list[BrokerEvent]:
    """Fill an order a trade at ``price`` triggered: whole, or a stop's first chunk."""
    if order.type is not OrderType.STOP:
        return fill(book, order, _remaining(order), price, ts)
    qty = _chunk(order, max_fill_qty)
    if qty < _remaining(order) - EPS:
        book.stop_triggered[order.order_id] = ts  # the rest fills as a market order
    return fill(book, order, qty, price, ts)


def fill(book: Book, order: Order, qty: float, price: float, ts: datetime) -> list[BrokerEvent]:
    """Execute ``qty`` of ``order`` at ``price``: record it, move the position, update the order.

    Stamped ``ts``, or the last execution's time when that is later: a part of a
    fill stamped with its bar's time must not come before an execution recorded
    earlier in the bar (a stop a price move triggered), as no venue's clock runs
    back; replays order executions by time.
    """
    if book.executions and book.executions[-1].ts > ts:
        ts = book.executions[-1].ts
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
    done = filled >= order.qty - EPS
    updated = msgspec.structs.replace(
        order,
        filled_qty=order.qty if done else filled,
        avg_fill_price=avg,
        status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED,
        updated_at=ts,
    )
    book.orders[order.order_id] = updated
    if done:
        book.stop_triggered.pop(order.order_id, None)
    return [execution, OrderUpdate(updated)]


def is_triggered_stop(book: Book, order: Order) -> bool:
    """Return whether ``order`` is a stop a bar triggered that still fills in chunks."""
    return order.type is OrderType.STOP and order.order_id in book.stop_triggered


def _remaining(order: Order) -> float:
    return order.qty - order.filled_qty


def _chunk(order: Order, max_fill_qty: float | None) -> float:
    remaining = _remaining(order)
    return remaining if max_fill_qty is None else min(remaining, max_fill_qty)


def _trigger_price(book: Book, order: Order, bar: Bar, ts: datetime) -> float | None:
    """Return the price ``bar`` fills ``order`` at (``None``: it rests); mark triggered stop-limits.

    ``ts`` is when a stop-limit that ``bar`` triggers is recorded as triggered.
    """
    match order.type:
        case OrderType.STOP if order.stop_price is not None:
            return _stop_price_hit(order.side, order.stop_price, bar)
        case OrderType.LIMIT if order.limit_price is not None:
            return _limit_price_hit(order.side, order.limit_price, bar)
        case OrderType.STOP_LIMIT if order.stop_price is not None and order.limit_price is not None:
            limit = order.limit_price
            if order.order_id in book.stop_triggered:
                return _limit_price_hit(order.side, limit, bar)
            trigger = _stop_price_hit(order.side, order.stop_price, bar)
            if trigger is None:
                return None
            book.stop_triggered[order.order_id] = ts
            within = trigger <= limit if order.side is Side.BUY else trigger >= limit
            return trigger if within else None
        case _:
            return None


def _stop_price_hit(side: Side, stop: float, bar: Bar) -> float | None:
    if side is Side.BUY and bar.high >= stop:
        return max(stop, bar.open)
    if side is Side.SELL and bar.low <= stop:
        return min(stop, bar.open)
    return None


def _limit_price_hit(side: Side, limit: float, bar: Bar) -> float | None:
    if side is Side.BUY and bar.low <= limit:
        return min(limit, bar.open)
    if side is Side.SELL and bar.high >= limit:
        return max(limit, bar.open)
    return None


def _apply_to_position(book: Book, execution: Execution) -> None:
    position = book.positions.get(execution.symbol)
    old = position.qty if position else 0.0
    avg = position.avg_price if position else 0.0
    delta = signed(execution.side, execution.qty)
    new = round(old + delta, 9)
    if abs(new) < EPS:
        book.positions.pop(execution.symbol, None)
        return
    if old == 0.0 or (old > 0) == (delta > 0):
        avg = (abs(old) * avg + execution.qty * execution.price) / abs(new)
    elif (old > 0) != (new > 0):
        avg = execution.price
    book.positions[execution.symbol] = BrokerPosition(
        symbol=execution.symbol, qty=new, avg_price=avg
    )
