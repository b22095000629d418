"""The position state of one (account, symbol): data only, versioned.

Everything the broker does not know lives here (strategy, entries, partials,
stop placement, targets, pivots, attempt counts, extremes, daily P&L). The
broker's quantities override ``qty`` and ``avg_price`` at reconciliation.
Transitions live in ``actors.model``; this module only defines the shapes.
"""

from __future__ import annotations

import enum
from datetime import date, datetime

import msgspec

from brokers.base import OrderType, Side
from persistence.protocol import ClosedTradeRow

__all__ = [
    "SCHEMA_VERSION",
    "STOP_FILLED",
    "ClosedTrade",
    "ExitReason",
    "Fill",
    "Intent",
    "IntentKind",
    "Mode",
    "Origin",
    "PartialExit",
    "PositionState",
    "StopOrder",
    "attempt_key",
]

SCHEMA_VERSION = 1
STOP_FILLED = "filled"  # ``StopOrder.status`` of a stop the venue says filled


class Origin(enum.StrEnum):
    STRATEGY = "strategy"
    RECOVERED = "recovered"


class Mode(enum.StrEnum):
    """Who may send orders for the symbol."""

    MANAGED = "managed"  # the strategy trades it
    WATCH = "watch"  # tracked only (an adopted orphan until assigned); no automated orders


class IntentKind(enum.StrEnum):
    ENTRY = "entry"
    STOP = "stop"
    PARTIAL = "partial"
    EXIT = "exit"


class ExitReason(enum.StrEnum):
    TARGET = "target"
    STOP = "stop"
    PARTIAL = "partial"
    EOD = "eod"
    MANUAL = "manual"
    CLOSED_EXTERNALLY = "CLOSED_EXTERNALLY"
    FLATTEN = "flatten"


class Fill(msgspec.Struct, frozen=True):
    exec_id: str
    at: datetime
    side: Side
    qty: float
    price: float


class PartialExit(msgspec.Struct, frozen=True):
    at: datetime
    price: float
    qty: float
    reason: str


class StopOrder(msgspec.Struct, frozen=True):
    """The protective stop; ``order_id`` is None until the broker acknowledged it.

    ``qty`` is the stop's open quantity: what of its order has not filled, which
    is what it still protects and what is kept equal to the open position (a
    resize, ``MoveStop`` and the status report speak of it). ``filled_qty`` is what
    of the order has filled, by the executions applied here (a fill of the stop
    moves shares from ``qty`` to ``filled_qty``). The order's total at the venue,
    what a replace sends and what the stop's intent holds as its qty, is
    ``order_qty``: filled plus open. A stop with an intent takes its filled qty
    from the intent (``model.set_stop``), so the two never count apart.

    A stop the venue says filled (status ``STOP_FILLED``, ``filled_at_venue``)
    rests no more and is never moved or canceled again, but a venue may deliver
    its fill as several executions, after saying so. It is kept until they are
    all applied: its ``qty`` is then what of the venue's fill has not reached
    us yet, and ``order_qty`` the fill's total (``model.stop_filled``).
    """

    client_order_id: str
    side: Side
    price: float
    qty: float
    order_id: str | None = None
    status: str = "pending"  # pending, live, replacing, filled, canceled
    filled_qty: float = 0.0

    @property
    def order_qty(self) -> float:
        """Return the order's total qty at the venue: what filled plus what is open."""
        return self.filled_qty + self.qty

    @property
    def filled_at_venue(self) -> bool:
        """Return whether the venue said the order filled (its executions may still come)."""
        return self.status == STOP_FILLED


class Intent(msgspec.Struct, frozen=True):
    """An order the actor decided to send, durable before it is sent."""

    client_order_id: str
    kind: IntentKind
    side: Side
    qty: float
    order_type: OrderType
    created_at: datetime
    price: float | None = None
    reason: str = ""
    order_id: str | None = None
    filled_qty: float = 0.0


# A round trip is what the store keeps of it: one type, no copy between them.
# MAE and MFE are per-share price distances, both >= 0.
ClosedTrade = ClosedTradeRow


class PositionState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One symbol's durable state. ``qty`` is signed: long > 0, short < 0."""

    account: str
    symbol: str
    trading_day: date
    version: int = SCHEMA_VERSION
    strategy: str = "pivot_breakout"
    origin: Origin = Origin.STRATEGY
    mode: Mode = Mode.MANAGED
    qty: float = 0.0
    avg_price: float = 0.0
    opened_at: datetime | None = None
    entries: tuple[Fill, ...] = ()
    exits: tuple[Fill, ...] = ()
    partials: tuple[PartialExit, ...] = ()
    applied: tuple[str, ...] = ()
    stop: StopOrder | None = None
    pivot: float | None = None
    targets: tuple[float, ...] = ()
    planned_stop: float | None = None
    levels: dict[str, float] = {}
    levels_day: date | None = None
    attempts: dict[str, int] = {}
    entries_today: int = 0
    intents: tuple[Intent, ...] = ()
    # Client order id -> what of its fill a heal booked, as the broker's quantity held
    # it, before its executions arrived (``model.absorb_fill_rest``): those
    # executions, if they come, are booked without moving the position again.
    absorbed_fills: dict[str, float] = {}
    trade_high: float | None = None
    trade_low: float | None = None
    trade_realized: float = 0.0
    realized_pnl_today: float = 0.0
    trades_today: int = 0
    last_price: float | None = None
    seq: int = 0

    @property
    def side(self) -> Side | None:
        if self.qty > 0:
            return Side.BUY
        if self.qty < 0:
            return Side.SELL
        return None

    @property
    def is_flat(self) -> bool:
        return self.qty == 0

    def intent(self, client_order_id: str) -> Intent | None:
        for intent in self.intents:
            if intent.client_order_id == client_order_id:
                return intent
        return None

    def attempts_for(self, day: date, pivot: float, side: Side) -> int:
        return self.attempts.get(attempt_key(day, pivot, side), 0)


def attempt_key(day: date, pivot: float, side: Side) -> str:
    """Key of the attempt counter for (trading day, pivot, side)."""
    return f"{day.isoformat()}|{pivot:.4f}|{side.value}"
