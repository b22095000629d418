"""The venue model: what every broker adapter translates its venue's types into.

This module is ground level: it imports nothing of ours. Actors, the store and
every adapter speak these types, so a broker adapter never knows an actor exists
and an actor never knows which venue it trades on.

Quantities are signed where they describe a position (long > 0, short < 0) and
unsigned where they describe an order or an execution (the side carries the
sign). Every timestamp is an aware UTC ``datetime``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

__all__ = [
    "Bar",
    "Broker",
    "BrokerError",
    "BrokerEvent",
    "BrokerPosition",
    "BrokerUnavailable",
    "Capabilities",
    "Connected",
    "Disconnected",
    "DuplicateClientOrderId",
    "Execution",
    "Order",
    "OrderNotFound",
    "OrderRejected",
    "OrderRequest",
    "OrderStatus",
    "OrderType",
    "OrderUpdate",
    "Side",
    "signed",
]


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is _BUY else -1

    @property
    def opposite(self) -> Side:
        return _SELL if self is _BUY else _BUY


# Bound once: a member read through its class is a descriptor call (~0.1 us on
# 3.11), and fills, plans and stops ask a side for its sign all the time.
_BUY, _SELL = Side.BUY, Side.SELL


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class OrderStatus(enum.StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        return self in _OPEN_STATUSES


_OPEN_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)  # bound once, as above


def signed(side: Side, qty: float) -> float:
    """Return ``qty`` with the sign of ``side`` (buy positive, sell negative)."""
    return qty * side.sign


class Bar(msgspec.Struct, frozen=True, tag=True):
    """One OHLCV bar; ``ts`` is the bar's open time (UTC)."""

    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float


class Execution(msgspec.Struct, frozen=True, tag=True):
    """One fill at the venue. ``exec_id`` is unique per account and venue."""

    exec_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    ts: datetime

    def validate(self) -> None:
        """Raise ``ValueError`` when the execution cannot be a real fill."""
        if not self.exec_id:
            raise ValueError("execution without exec_id")
        if not math.isfinite(self.qty) or self.qty <= 0:
            raise ValueError(f"execution {self.exec_id}: qty {self.qty!r} is not a positive number")
        if not math.isfinite(self.price) or self.price <= 0:
            raise ValueError(
                f"execution {self.exec_id}: price {self.price!r} is not a positive number"
            )


class OrderRequest(msgspec.Struct, frozen=True):
    """An order as the trader asks for it; ``client_order_id`` is deterministic."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    limit_price: float | None = None
    stop_price: float | None = None


class Order(msgspec.Struct, frozen=True):
    """An order as the venue knows it."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    status: OrderStatus
    filled_qty: float = 0.0
    avg_fill_price: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class BrokerPosition(msgspec.Struct, frozen=True):
    """A position as the venue reports it: the truth for quantities."""

    symbol: str
    qty: float
    avg_price: float


class OrderUpdate(msgspec.Struct, frozen=True, tag=True):
    """An order changed state at the venue (accepted, canceled, replaced, rejected)."""

    order: Order


class Connected(msgspec.Struct, frozen=True, tag=True):
    """The venue connection is (re)established; ``data_lost`` asks for a full backfill."""

    data_lost: bool = True


class Disconnected(msgspec.Struct, frozen=True, tag=True):
    """The venue connection is gone."""

    reason: str = ""


BrokerEvent = Execution | OrderUpdate | Bar | Connected | Disconnected


class Capabilities(msgspec.Struct, frozen=True):
    """What a venue can tell us; recovery adapts to what it cannot."""

    reports_positions: bool = True
    reports_executions: bool = True
    history: bool = True
    replace: bool = True


class BrokerError(Exception):
    """A venue refused or failed a request."""


class BrokerUnavailable(BrokerError):
    """The venue cannot be reached now; retry later."""


class OrderRejected(BrokerError):
    """The venue refused an order."""


class DuplicateClientOrderId(OrderRejected):
    """The venue already has an order with this client order id."""

    def __init__(self, client_order_id: str) -> None:
        super().__init__(f"duplicate client_order_id {client_order_id!r}")
        self.client_order_id = client_order_id


class OrderNotFound(BrokerError):
    """The venue does not know this order."""


@runtime_checkable
class Broker(Protocol):
    """What the runtime needs of a venue. Adapters implement it; nothing else does."""

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def account_id(self) -> str: ...

    @property
    def venue_account(self) -> str | None:
        """Return the venue's own number of the account connected to (None: not known,
        or the same as ``account_id``); the store binds to it at the first connect."""
        ...

    def now(self) -> datetime:
        """Return the venue's market time (UTC); the wall clock for real brokers."""
        ...

    async def connect(self) -> None:
        """Connect; raise ``BrokerUnavailable`` when the venue cannot be reached."""
        ...

    async def close(self) -> None: ...

    def events(self) -> AsyncIterator[BrokerEvent]:
        """Yield executions, order updates, bars and connection changes, in venue order."""
        ...

    async def subscribe(self, symbols: list[str]) -> None:
        """Ask for bars of ``symbols``."""
        ...

    async def positions(self) -> list[BrokerPosition]: ...

    async def open_orders(self) -> list[Order]: ...

    async def executions(self, since: datetime) -> list[Execution]: ...

    async def submit(self, request: OrderRequest) -> Order:
        """Send an order; raise ``DuplicateClientOrderId`` when the id is known."""
        ...

    async def order_by_client_id(self, client_order_id: str) -> Order | None: ...

    async def cancel(self, order_id: str) -> None: ...

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        """Move a resting stop; return the order as it now rests.

        ``qty`` (None keeps it) is the order's new total quantity, what of it
        already filled included, as Alpaca's replace and IBKR's modify of
        ``totalQuantity`` take it: a stop of 100 with 40 filled that is to cover
        50 is sent 90. Raises ``OrderNotFound`` for an unknown order and
        ``OrderRejected`` for one that is not an open stop or a ``qty`` at or
        below its filled qty.
        """
        ...

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]: ...
