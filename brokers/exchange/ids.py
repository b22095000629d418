"""Alpaca-shaped ids for the sim engine's ids, both ways, with no table to keep.

The engine numbers its orders and executions (``SIM-O0000001``, ``SIM-E0000001``);
Alpaca's clients expect UUIDs. An id is a UUID whose high 64 bits name the kind
and whose low bits carry the engine's number, so the mapping is a pure function
in both directions and survives the exchange's restart with the book.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

__all__ = [
    "account_uuid",
    "activity_id",
    "asset_uuid",
    "execution_uuid",
    "order_uuid",
    "sim_execution_id",
    "sim_order_id",
]

_ORDER_HIGH = 0x5E1A0000_0000_4000
_EXECUTION_HIGH = 0x5E1A0001_0000_4000
_VARIANT = 0x8000_0000_0000_0000
_LOW_MASK = (1 << 62) - 1
_NAMESPACE = uuid.UUID("5e1a0002-0000-4000-8000-000000000000")

_ORDER_PREFIX = "SIM-O"
_EXECUTION_PREFIX = "SIM-E"


def _encode(high: int, prefix: str, sim_id: str) -> str:
    if not sim_id.startswith(prefix) or not sim_id[len(prefix) :].isdigit():
        raise ValueError(f"not an engine id of kind {prefix!r}: {sim_id!r}")
    number = int(sim_id[len(prefix) :])
    return str(uuid.UUID(int=(high << 64) | _VARIANT | number))


def _decode(high: int, prefix: str, width: int, text: str) -> str | None:
    try:
        value = uuid.UUID(text).int
    except ValueError:
        return None
    if value >> 64 != high or (value & ~_LOW_MASK) & ((1 << 64) - 1) != _VARIANT:
        return None
    return f"{prefix}{value & _LOW_MASK:0{width}d}"


def order_uuid(sim_id: str) -> str:
    """Return the Alpaca order id of the engine order ``sim_id``."""
    return _encode(_ORDER_HIGH, _ORDER_PREFIX, sim_id)


def sim_order_id(order_id: str) -> str | None:
    """Return the engine id of an Alpaca order id; ``None`` when it is not one of ours."""
    return _decode(_ORDER_HIGH, _ORDER_PREFIX, 7, order_id)


def execution_uuid(sim_id: str) -> str:
    """Return the Alpaca execution id of the engine execution ``sim_id``."""
    return _encode(_EXECUTION_HIGH, _EXECUTION_PREFIX, sim_id)


def sim_execution_id(execution_id: str) -> str | None:
    """Return the engine id of an Alpaca execution id; ``None`` when it is not one of ours."""
    return _decode(_EXECUTION_HIGH, _EXECUTION_PREFIX, 7, execution_id)


def asset_uuid(symbol: str) -> str:
    """Return the (stable) asset id of ``symbol``."""
    return str(uuid.uuid5(_NAMESPACE, f"asset/{symbol}"))


def account_uuid(account: str) -> str:
    """Return the (stable) account id of the book's account."""
    return str(uuid.uuid5(_NAMESPACE, f"account/{account}"))


def activity_id(ts: datetime, execution_id: str) -> str:
    """Return the FILL activity id: ``<yyyymmddHHMMSSmmm>::<execution id>`` as Alpaca spells it."""
    ts = ts.astimezone(UTC)
    return f"{ts:%Y%m%d%H%M%S}{ts.microsecond // 1000:03d}::{execution_id}"
