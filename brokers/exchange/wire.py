"""Translation of the engine's book into Alpaca's wire shapes: pure functions, JSON-ready.

Amounts are strings as Alpaca sends them; times are ISO 8601 UTC with ``Z``.
Fields are the ones alpaca-py's pydantic models require plus the few a trader
reads; the installed alpaca-py source is the judge of what is required.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information

from brokers.base import (
    Bar,
    BrokerEvent,
    BrokerPosition,
    Execution,
    Order,
    OrderStatus,
    OrderUpdate,
    signed,
)
from brokers.exchange import ids
from brokers.sim.engine import Book

__all__ = [
    "Json",
    "account_json",
    "activities",
    "amount",
    "bar_json",
    "bar_stream_json",
    "error_json",
    "execution_json",
    "iso",
    "order_json",
    "pack",
    "position_json",
    "trade_updates",
    "unpack",
]

Json = dict[str, Any]

_EPS = 1e-9


def amount(value: float) -> str:
    """Return ``value`` as Alpaca spells an amount: ``"100"``, ``"187.25"``."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def iso(ts: datetime) -> str:
    """Return ``ts`` as ISO 8601 UTC with a ``Z``."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def error_json(code: int, message: str) -> Json:
    """Return Alpaca's error body."""
    return {"code": code, "message": message}


def order_json(order: Order) -> Json:
    """Return ``order`` as Alpaca's Order entity."""
    created = order.created_at or datetime(1970, 1, 1, tzinfo=UTC)
    updated = order.updated_at or created
    status = order.status
    return {
        "id": ids.order_uuid(order.order_id),
        "client_order_id": order.client_order_id,
        "created_at": iso(created),
        "updated_at": iso(updated),
        "submitted_at": iso(created),
        "filled_at": iso(updated) if status is OrderStatus.FILLED else None,
        "expired_at": None,
        "canceled_at": iso(updated) if status is OrderStatus.CANCELED else None,
        "failed_at": iso(updated) if status is OrderStatus.REJECTED else None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": ids.asset_uuid(order.symbol),
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": amount(order.qty),
        "filled_qty": amount(order.filled_qty),
        "filled_avg_price": None if order.avg_fill_price is None else amount(order.avg_fill_price),
        "order_class": "simple",
        "order_type": order.type.value,
        "type": order.type.value,
        "side": order.side.value,
        "time_in_force": "gtc",
        "limit_price": None if order.limit_price is None else amount(order.limit_price),
        "stop_price": None if order.stop_price is None else amount(order.stop_price),
        "status": status.value,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def position_json(position: BrokerPosition, last: float) -> Json:
    """Return ``position`` as Alpaca's Position entity, marked at ``last``."""
    qty = position.qty
    cost = qty * position.avg_price
    value = qty * last
    return {
        "asset_id": ids.asset_uuid(position.symbol),
        "symbol": position.symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": amount(position.avg_price),
        "qty": amount(qty),
        "qty_available": amount(qty),
        "side": "long" if qty > 0 else "short",
        "market_value": amount(round(value, 4)),
        "cost_basis": amount(round(cost, 4)),
        "unrealized_pl": amount(round(value - cost, 4)),
        "current_price": amount(last),
        "lastday_price": amount(last),
        "change_today": "0",
    }


def account_json(book: Book, start_cash: float) -> Json:
    """Return the account, cash from ``start_cash`` and every execution the book keeps."""
    cash = start_cash - sum(signed(e.side, e.qty) * e.price for e in book.executions)
    long_value = short_value = 0.0
    for position in book.positions.values():
        value = position.qty * book.instruments[position.symbol].last
        if value > 0:
            long_value += value
        else:
            short_value += value
    equity = cash + long_value + short_value
    return {
        "id": ids.account_uuid(book.account_id),
        "account_number": book.account_id,
        "status": "ACTIVE",
        "currency": "USD",
        "cash": amount(round(cash, 4)),
        "equity": amount(round(equity, 4)),
        "portfolio_value": amount(round(equity, 4)),
        "last_equity": amount(round(equity, 4)),
        "long_market_value": amount(round(long_value, 4)),
        "short_market_value": amount(round(short_value, 4)),
        "buying_power": amount(round(max(0.0, equity), 4)),
        "multiplier": "1",
        "pattern_day_trader": False,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "shorting_enabled": True,
    }


def execution_json(execution: Execution) -> Json:
    """Return ``execution`` with Alpaca's ids (the ground truth ``/_sim/executions`` lists)."""
    return {
        "exec_id": ids.execution_uuid(execution.exec_id),
        "order_id": ids.order_uuid(execution.order_id),
        "client_order_id": execution.client_order_id,
        "symbol": execution.symbol,
        "side": execution.side.value,
        "qty": execution.qty,
        "price": execution.price,
        "ts": iso(execution.ts),
    }


def activities(book: Book) -> list[tuple[Execution, Json]]:
    """Return every execution with its FILL activity, in the order they happened."""
    cumulative: dict[str, float] = {}
    out: list[tuple[Execution, Json]] = []
    for execution in book.executions:
        cum = cumulative.get(execution.order_id, 0.0) + execution.qty
        cumulative[execution.order_id] = cum
        order = book.orders.get(execution.order_id)
        total = order.qty if order is not None else cum
        done = cum >= total - _EPS
        execution_id = ids.execution_uuid(execution.exec_id)
        out.append(
            (
                execution,
                {
                    "id": ids.activity_id(execution.ts, execution_id),
                    "account_id": ids.account_uuid(book.account_id),
                    "activity_type": "FILL",
                    "transaction_time": iso(execution.ts),
                    "type": "fill" if done else "partial_fill",
                    "price": amount(execution.price),
                    "qty": amount(execution.qty),
                    "side": execution.side.value,
                    "symbol": execution.symbol,
                    "leaves_qty": amount(max(0.0, total - cum)),
                    "order_id": ids.order_uuid(execution.order_id),
                    "cum_qty": amount(cum),
                    "order_status": "filled" if done else "partially_filled",
                },
            )
        )
    return out


def trade_updates(
    events: Iterable[BrokerEvent], book: Book, *, replaced: frozenset[str] = frozenset()
) -> list[Json]:
    """Return the trade-update ``data`` of each order change in ``events`` (bars are skipped).

    An execution and the order update that follows it are one ``fill`` or
    ``partial_fill``; ``replaced`` names the orders whose update is a replacement.
    ``position_qty`` is the position right after each fill (``book`` is the state
    after all of ``events``).
    """
    events = list(events)
    running = {s: p.qty for s, p in book.positions.items()}
    position_after: dict[str, float] = {}
    for event in reversed(events):
        if isinstance(event, Execution):
            qty = running.get(event.symbol, 0.0)
            position_after[event.exec_id] = qty
            running[event.symbol] = qty - signed(event.side, event.qty)
    updates: list[Json] = []
    pending: Execution | None = None
    for event in events:
        if isinstance(event, Execution):
            pending = event
            continue
        if not isinstance(event, OrderUpdate):
            continue
        order = event.order
        update: Json = {"order": order_json(order)}
        if pending is not None and pending.order_id == order.order_id:
            update |= {
                "event": "fill" if order.status is OrderStatus.FILLED else "partial_fill",
                "execution_id": ids.execution_uuid(pending.exec_id),
                "timestamp": iso(pending.ts),
                "price": amount(pending.price),
                "qty": amount(pending.qty),
                "position_qty": amount(position_after[pending.exec_id]),
            }
            pending = None
        else:
            update |= {
                "event": _order_event(order, order.order_id in replaced),
                "timestamp": iso(order.updated_at or order.created_at or book.market_time),
            }
        updates.append(update)
    return updates


def _order_event(order: Order, replaced: bool) -> str:
    if replaced:
        return "replaced"
    match order.status:
        case OrderStatus.CANCELED:
            return "canceled"
        case OrderStatus.REJECTED:
            return "rejected"
        case OrderStatus.FILLED:
            return "fill"
        case OrderStatus.PARTIALLY_FILLED:
            return "partial_fill"
        case _:
            return "new"


def _bar_fields(bar: Bar) -> Json:
    return {
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "n": max(1, int(bar.volume // 100)),
        "vw": round((bar.high + bar.low + bar.close) / 3, 4),
    }


def bar_json(bar: Bar) -> Json:
    """Return ``bar`` as the history REST API spells it."""
    return {"t": iso(bar.ts), **_bar_fields(bar)}


def bar_stream_json(bar: Bar) -> Json:
    """Return ``bar`` as the data stream spells it (``t`` is a msgpack Timestamp)."""
    return {
        "T": "b",
        "S": bar.symbol,
        "t": msgpack.Timestamp.from_datetime(bar.ts),
        **_bar_fields(bar),
    }


def pack(messages: list[Json]) -> bytes:
    """Return one data-stream frame (a msgpack list)."""
    frame: bytes = msgpack.packb(messages)
    return frame


def unpack(data: bytes) -> object:
    """Decode a client's msgpack frame; ``None`` when it is not msgpack."""
    try:
        decoded: object = msgpack.unpackb(data)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    return decoded
