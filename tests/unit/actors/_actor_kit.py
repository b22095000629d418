"""Factories for the pure position model tests: states, executions, bars, orders.

A module rather than a ``conftest.py``: the tests dirs have no ``__init__.py``, so a
second ``conftest`` would be a duplicate top-level module for mypy (tests/unit/
persistence has one). Plain functions also suit hypothesis, which refuses
function-scoped fixtures inside ``@given``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from actors import model
from actors.bars import BarRing
from actors.snapshot import encode_snapshot
from actors.state import SCHEMA_VERSION, ClosedTrade, Intent, IntentKind, PositionState
from actors.strategy import Session
from brokers.base import Bar, BrokerPosition, Execution, Order, OrderStatus, OrderType, Side
from persistence import SnapshotRow

ACCOUNT = "PA-TEST-1"
SYMBOL = "AAPL"
DAY = date(2026, 1, 5)  # a Monday
OPEN = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)  # 09:30 New York
CLOSE = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)  # 16:00 New York
SESSION = Session(open=OPEN, close=CLOSE, bar_seconds=60)
NEXT_DAY = DAY + timedelta(days=1)
MAX_ATTEMPTS = 2
PIVOT = 101.0


def position_state(**changes: Any) -> PositionState:
    """Return a flat state of (ACCOUNT, SYMBOL) on DAY, with ``changes`` applied."""
    fields: dict[str, Any] = {"account": ACCOUNT, "symbol": SYMBOL, "trading_day": DAY}
    fields.update(changes)
    return PositionState(**fields)


def snapshot_row(state: PositionState, taken_at: datetime) -> SnapshotRow:
    """Return the snapshot row of ``state`` (an empty 240-bar buffer), taken at ``taken_at``."""
    blob = encode_snapshot(state, BarRing(state.symbol, 240))
    return SnapshotRow(state.symbol, blob, SCHEMA_VERSION, state.seq, taken_at)


def at(minute: int, day: date = DAY) -> datetime:
    """Return the time ``minute`` minutes after the session open of ``day``."""
    return datetime.combine(day, OPEN.timetz()) + timedelta(minutes=minute)


def execution(
    exec_id: str,
    side: Side = Side.BUY,
    qty: float = 100.0,
    price: float = 100.0,
    *,
    ts: datetime = OPEN,
    client_order_id: str = "",
    order_id: str = "",
    symbol: str = SYMBOL,
) -> Execution:
    return Execution(
        exec_id=exec_id,
        order_id=order_id or f"o-{exec_id}",
        client_order_id=client_order_id or f"manual-{exec_id}",
        symbol=symbol,
        side=side,
        qty=qty,
        price=price,
        ts=ts,
    )


def buy(exec_id: str, qty: float, price: float, **kwargs: Any) -> Execution:
    return execution(exec_id, Side.BUY, qty, price, **kwargs)


def sell(exec_id: str, qty: float, price: float, **kwargs: Any) -> Execution:
    return execution(exec_id, Side.SELL, qty, price, **kwargs)


def apply_all(state: PositionState, executions: Iterable[Execution]) -> PositionState:
    """Apply ``executions`` in order and return the final state."""
    for ex in executions:
        state = model.apply_fill(state, ex).state
    return state


def enter(
    state: PositionState,
    *,
    pivot: float = PIVOT,
    side: Side = Side.BUY,
    qty: float = 100.0,
    day: date | None = None,
) -> tuple[PositionState, Intent]:
    """Begin an entry at ``pivot`` on the state's trading day (or ``day``)."""
    return model.begin_entry(
        state,
        day=state.trading_day if day is None else day,
        pivot=pivot,
        side=side,
        qty=qty,
        now=OPEN,
        max_attempts=MAX_ATTEMPTS,
    )


def only_trade(applied: model.Applied) -> ClosedTrade:
    """Return the one trade ``applied`` closed."""
    assert len(applied.closed) == 1
    return applied.closed[0]


def long_position(qty: float = 100.0, price: float = 100.0, **changes: Any) -> PositionState:
    """Return a state holding ``qty`` shares bought at ``price`` (one fill, ``e-open``)."""
    return apply_all(position_state(**changes), [buy("e-open", qty, price)])


def short_position(qty: float = 100.0, price: float = 100.0, **changes: Any) -> PositionState:
    """Return a state short ``qty`` shares sold at ``price`` (one fill, ``e-open``)."""
    return apply_all(position_state(**changes), [sell("e-open", qty, price)])


def bar(
    minute: int,
    close: float,
    *,
    high: float | None = None,
    low: float | None = None,
    open_: float | None = None,
    volume: float = 1000.0,
    day: date = DAY,
    symbol: str = SYMBOL,
) -> Bar:
    """Return the one-minute bar opening ``minute`` minutes after ``day``'s session open."""
    first = close if open_ is None else open_
    return Bar(
        symbol=symbol,
        ts=at(minute, day),
        open=first,
        high=max(first, close) if high is None else high,
        low=min(first, close) if low is None else low,
        close=close,
        volume=volume,
    )


def ring_of(bars: Iterable[Bar], capacity: int = 240) -> BarRing:
    ring = BarRing(SYMBOL, capacity)
    for item in bars:
        ring.append(item)
    return ring


def flat_bars(count: int, close: float, *, first_minute: int = 0) -> list[Bar]:
    """Return ``count`` consecutive bars that all close at ``close``."""
    return [bar(first_minute + i, close) for i in range(count)]


def order(
    client_order_id: str,
    *,
    side: Side = Side.SELL,
    qty: float = 100.0,
    type_: OrderType = OrderType.STOP,
    status: OrderStatus = OrderStatus.NEW,
    stop_price: float | None = 95.0,
    symbol: str = SYMBOL,
) -> Order:
    return Order(
        order_id=f"b-{client_order_id}",
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        qty=qty,
        type=type_,
        status=status,
        stop_price=stop_price if type_ is OrderType.STOP else None,
    )


def broker_position(qty: float, avg_price: float = 100.0, symbol: str = SYMBOL) -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=qty, avg_price=avg_price)


def intents_in_flight(kinds: Iterable[IntentKind], at: datetime, qty: float) -> tuple[Intent, ...]:
    """Return a market buy intent of ``qty`` of each of ``kinds`` (ids c0, c1, ...)."""
    return tuple(
        Intent(
            client_order_id=f"c{k}",
            kind=kind,
            side=Side.BUY,
            qty=qty,
            order_type=OrderType.MARKET,
            created_at=at,
        )
        for k, kind in enumerate(kinds)
    )
