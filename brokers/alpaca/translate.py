"""Alpaca's types in the venue model's words, and ours in Alpaca's: pure functions.

Two Alpaca habits are absorbed here so the runtime never sees them:

* **Replacement is a new order.** Alpaca replaces an order by a new one (new
  id, ``replaces`` the old) and reports the old one as ``replaced``. The venue
  model keeps a stop's identity across moves, so the adapter names each
  replacement ``<root>.r<n>`` and every client order id is reported as its
  root; the ``replaced`` old order is not an event (it was not canceled).
* **Statuses.** Alpaca has many; the runtime needs open, partially filled,
  filled, canceled (also expired, done for day) and rejected.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from brokers.alpaca.sdk import (
    AlpacaBar,
    AlpacaOrder,
    AlpacaOrderStatus,
    AlpacaOrderType,
    OrderSide,
    Position,
    TradeActivity,
    TradeUpdate,
)
from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerPosition,
    Execution,
    Order,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
)

__all__ = [
    "activity_execution",
    "alpaca_side",
    "bar",
    "next_replacement_id",
    "order",
    "position",
    "root_client_id",
    "tick",
    "trade_update_events",
]

log = logging.getLogger(__name__)

_REPLACEMENT = re.compile(r"^(?P<root>.+)\.r(?P<n>\d+)$")

_STATUS = {
    AlpacaOrderStatus.NEW: OrderStatus.NEW,
    AlpacaOrderStatus.ACCEPTED: OrderStatus.NEW,
    AlpacaOrderStatus.PENDING_NEW: OrderStatus.NEW,
    AlpacaOrderStatus.ACCEPTED_FOR_BIDDING: OrderStatus.NEW,
    AlpacaOrderStatus.PENDING_CANCEL: OrderStatus.NEW,
    AlpacaOrderStatus.PENDING_REPLACE: OrderStatus.NEW,
    AlpacaOrderStatus.PENDING_REVIEW: OrderStatus.NEW,
    AlpacaOrderStatus.HELD: OrderStatus.NEW,
    AlpacaOrderStatus.CALCULATED: OrderStatus.NEW,
    AlpacaOrderStatus.STOPPED: OrderStatus.NEW,
    AlpacaOrderStatus.SUSPENDED: OrderStatus.NEW,
    AlpacaOrderStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    AlpacaOrderStatus.FILLED: OrderStatus.FILLED,
    AlpacaOrderStatus.CANCELED: OrderStatus.CANCELED,
    AlpacaOrderStatus.EXPIRED: OrderStatus.CANCELED,
    AlpacaOrderStatus.DONE_FOR_DAY: OrderStatus.CANCELED,
    AlpacaOrderStatus.REPLACED: OrderStatus.CANCELED,
    AlpacaOrderStatus.REJECTED: OrderStatus.REJECTED,
}

_TYPE = {
    AlpacaOrderType.MARKET: OrderType.MARKET,
    AlpacaOrderType.LIMIT: OrderType.LIMIT,
    AlpacaOrderType.STOP: OrderType.STOP,
    AlpacaOrderType.STOP_LIMIT: OrderType.STOP_LIMIT,
}

_FILL_EVENTS = frozenset({"fill", "partial_fill"})
_ORDER_EVENTS = frozenset({"new", "accepted", "canceled", "expired", "rejected", "done_for_day"})


def root_client_id(client_order_id: str) -> str:
    """Return the client order id the runtime chose (``<root>.r<n>`` -> ``<root>``)."""
    match = _REPLACEMENT.match(client_order_id)
    return match["root"] if match else client_order_id


def next_replacement_id(client_order_id: str) -> str:
    """Return the client order id of the next replacement of an order (``<root>.r<n+1>``)."""
    match = _REPLACEMENT.match(client_order_id)
    if match is None:
        return f"{client_order_id}.r1"
    return f"{match['root']}.r{int(match['n']) + 1}"


def tick(price: float) -> float:
    """Round ``price`` to Alpaca's tick: cents from $1 up, 1/100 cent below (it refuses finer)."""
    return round(price, 2) if price >= 1.0 else round(price, 4)


def alpaca_side(side: Side) -> OrderSide:
    return OrderSide.BUY if side is Side.BUY else OrderSide.SELL


def _number(value: str | float | None) -> float | None:
    return None if value is None else float(value)


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _side(side: OrderSide | None, what: str) -> Side:
    if side is None:
        raise ValueError(f"{what} has no side")
    return Side.BUY if side == OrderSide.BUY else Side.SELL


def order(alpaca: AlpacaOrder) -> Order:
    """Return the venue model's ``Order`` of an Alpaca order.

    Raises ``ValueError`` for an order the runtime cannot trade (multi-leg, notional,
    trailing stop): it is reported by the caller, never guessed.
    """
    kind = _TYPE.get(AlpacaOrderType(alpaca.type or alpaca.order_type))
    if kind is None or alpaca.symbol is None or alpaca.qty is None:
        kind_name = getattr(alpaca.type, "value", alpaca.type)
        raise ValueError(f"order {alpaca.id}: {kind_name} orders are not modelled")
    filled = _number(alpaca.filled_qty) or 0.0
    status = _STATUS.get(AlpacaOrderStatus(alpaca.status), OrderStatus.NEW)
    if status is OrderStatus.NEW and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    return Order(
        order_id=str(alpaca.id),
        client_order_id=root_client_id(alpaca.client_order_id),
        symbol=alpaca.symbol,
        side=_side(alpaca.side, f"order {alpaca.id}"),
        qty=float(alpaca.qty),
        type=kind,
        status=status,
        filled_qty=filled,
        avg_fill_price=_number(alpaca.filled_avg_price) if filled > 0 else None,
        limit_price=_number(alpaca.limit_price),
        stop_price=_number(alpaca.stop_price),
        created_at=_utc(alpaca.created_at),
        updated_at=_utc(alpaca.updated_at),
    )


def position(alpaca: Position) -> BrokerPosition:
    """Return a position with its signed quantity (short < 0, whatever sign Alpaca sends)."""
    qty = abs(float(alpaca.qty))
    if str(alpaca.side.value) == "short":
        qty = -qty
    return BrokerPosition(symbol=alpaca.symbol, qty=qty, avg_price=float(alpaca.avg_entry_price))


def activity_execution(activity: TradeActivity, client_order_id: str) -> Execution:
    """Return the execution of a FILL activity; its exec id is the UUID after ``::``.

    ``client_order_id`` comes from the order (activities do not carry it).
    """
    return Execution(
        exec_id=activity.id.rpartition("::")[2],
        order_id=str(activity.order_id),
        client_order_id=root_client_id(client_order_id),
        symbol=activity.symbol,
        side=_side(activity.side, f"activity {activity.id}"),
        qty=float(activity.qty),
        price=float(activity.price),
        ts=_utc(activity.transaction_time),
    )


def trade_update_events(update: TradeUpdate) -> list[BrokerEvent]:
    """Return the venue-model events of one trade update (none for what the runtime ignores).

    Raises ``ValueError`` for an update that cannot be translated.
    """
    event = str(getattr(update.event, "value", update.event))
    alpaca = update.order
    if event == "replaced" and alpaca.status == AlpacaOrderStatus.REPLACED:
        return []  # the old half of a replacement; the new order arrives as its own update
    if event not in _FILL_EVENTS | _ORDER_EVENTS | {"replaced"}:
        log.debug("trade update %s of order %s ignored", event, alpaca.id)
        return []
    current = order(alpaca)
    if event not in _FILL_EVENTS:
        return [OrderUpdate(current)]
    if update.execution_id is None or update.qty is None or update.price is None:
        raise ValueError(f"{event} of order {alpaca.id} without execution_id, qty or price")
    execution = Execution(
        exec_id=str(update.execution_id),
        order_id=current.order_id,
        client_order_id=current.client_order_id,
        symbol=current.symbol,
        side=current.side,
        qty=float(update.qty),
        price=float(update.price),
        ts=_utc(update.timestamp),
    )
    return [execution, OrderUpdate(current)]


def bar(alpaca: AlpacaBar) -> Bar:
    """Return a bar (``ts`` is its open time, as Alpaca's)."""
    return Bar(
        symbol=alpaca.symbol,
        ts=_utc(alpaca.timestamp),
        open=float(alpaca.open),
        high=float(alpaca.high),
        low=float(alpaca.low),
        close=float(alpaca.close),
        volume=float(alpaca.volume),
    )
