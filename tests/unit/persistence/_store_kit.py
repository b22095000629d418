"""Factories for store tests: executions, snapshots, intents, trades, a stepping clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from brokers.base import Execution, Side
from persistence import (
    ClosedTradeRow,
    IntentRow,
    ReportRow,
    SessionRow,
    SnapshotRow,
)

ACCOUNT = "PA-TEST-1"
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
DAY = date(2026, 1, 5)


class StepClock:
    """Return T0, then one second later on every call: distinct, ordered stamps."""

    def __init__(self, start: datetime = T0) -> None:
        self._next = start

    def __call__(self) -> datetime:
        now = self._next
        self._next += timedelta(seconds=1)
        return now


def execution(
    exec_id: str,
    *,
    symbol: str = "AAPL",
    side: Side = Side.BUY,
    qty: float = 10.0,
    price: float = 187.25,
    ts: datetime = T0,
) -> Execution:
    return Execution(
        exec_id=exec_id,
        order_id=f"ord-{exec_id}",
        client_order_id=f"coid-{exec_id}",
        symbol=symbol,
        side=side,
        qty=qty,
        price=price,
        ts=ts,
    )


def snapshot(
    symbol: str = "AAPL", *, seq: int = 1, blob: bytes = b"\x81\xa3qty\x0a", ts: datetime = T0
) -> SnapshotRow:
    return SnapshotRow(symbol=symbol, blob=blob, schema_version=1, seq=seq, taken_at=ts)


def intent(client_order_id: str = "coid-1", *, price: float | None = 187.0) -> IntentRow:
    return IntentRow(
        client_order_id=client_order_id,
        symbol="AAPL",
        kind="entry",
        side=Side.BUY,
        qty=10.0,
        price=price,
        created_at=T0,
    )


def closed_trade(trade_id: str = "t-1", *, day: date = DAY) -> ClosedTradeRow:
    return ClosedTradeRow(
        trade_id=trade_id,
        symbol="AAPL",
        side=Side.BUY,
        qty=10.0,
        entry_at=None,
        entry_price=187.25,
        exit_at=datetime.combine(day, T0.timetz()) + timedelta(hours=2),
        exit_price=None,
        realized_pnl=-12.5,
        mae=-20.0,
        mfe=4.5,
        exit_reason="CLOSED_EXTERNALLY",
        strategy="pivot_breakout",
        trading_day=day,
    )


def session(day: date = DAY, *, pnl: float = 42.0, trades: int = 3) -> SessionRow:
    return SessionRow(trading_day=day, realized_pnl=pnl, trades_today=trades)


def report(at: datetime = T0, *, mode: str = "boot") -> ReportRow:
    return ReportRow(at=at, mode=mode, body='{"zombies": [], "orphans": []}')
