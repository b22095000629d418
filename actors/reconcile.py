"""Pure reconciliation: compare one symbol's local state with broker truth.

The broker is the truth for quantities, average price and live orders; the
local state is the truth for everything the broker does not know. ``plan_symbol``
says what differs; the actor (``actors.heal``) decides and does.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import msgspec

from actors.model import BadInput, WrongSymbol
from actors.state import PositionState
from brokers.base import BrokerPosition, Order, OrderType

__all__ = ["Finding", "SymbolPlan", "plan_symbol"]

_QTY_EPS = 1e-9
_AVG_EPS = 1e-6


class Finding(enum.StrEnum):
    OK = "ok"
    ZOMBIE = "zombie"  # open here, flat at the broker
    ORPHAN = "orphan"  # open at the broker, unknown here
    DRIFT = "drift"  # both open, quantities or prices differ


class SymbolPlan(msgspec.Struct, frozen=True):
    symbol: str
    finding: Finding
    local_qty: float
    broker_qty: float
    local_avg: float
    broker_avg: float
    broker_stop: Order | None
    unprotected: bool
    unknown_orders: tuple[Order, ...] = ()


def _protective_stop(orders: Sequence[Order], symbol: str, qty: float) -> Order | None:
    for order in orders:
        if order.symbol != symbol or order.type is not OrderType.STOP or not order.status.is_open:
            continue
        if (qty > 0 and order.side.sign < 0) or (qty < 0 and order.side.sign > 0):
            return order
    return None


def plan_symbol(
    state: PositionState, position: BrokerPosition | None, orders: Sequence[Order]
) -> SymbolPlan:
    """Compare ``state`` with the broker's ``position`` and open ``orders`` of its symbol.

    Orders of other symbols are ignored. Raises ``WrongSymbol`` for a position
    of another symbol and ``BadInput`` for a broker quantity or average price
    that cannot be real (garbage must never read as "flat at the broker").
    """
    if position is not None:
        if position.symbol != state.symbol:
            raise WrongSymbol(f"broker position of {position.symbol} compared with {state.symbol}")
        if not math.isfinite(position.qty) or not math.isfinite(position.avg_price):
            raise BadInput(
                f"broker position {position.qty!r} @ {position.avg_price!r} of {state.symbol}"
            )
    local_qty, local_avg = state.qty, state.avg_price
    broker_qty = position.qty if position is not None else 0.0
    broker_avg = position.avg_price if position is not None else 0.0
    local_open = abs(local_qty) > _QTY_EPS
    broker_open = abs(broker_qty) > _QTY_EPS
    if local_open and not broker_open:
        finding = Finding.ZOMBIE
    elif broker_open and not local_open:
        finding = Finding.ORPHAN
    elif broker_open and (
        abs(local_qty - broker_qty) > _QTY_EPS or abs(local_avg - broker_avg) > _AVG_EPS
    ):
        finding = Finding.DRIFT
    else:
        finding = Finding.OK
    mine = [o for o in orders if o.symbol == state.symbol and o.status.is_open]
    stop = _protective_stop(mine, state.symbol, broker_qty)
    known = {i.client_order_id for i in state.intents}
    if state.stop is not None:
        known.add(state.stop.client_order_id)
    unknown = tuple(o for o in mine if o.client_order_id not in known and o is not stop)
    return SymbolPlan(
        symbol=state.symbol,
        finding=finding,
        local_qty=local_qty,
        broker_qty=broker_qty,
        local_avg=local_avg,
        broker_avg=broker_avg,
        broker_stop=stop,
        unprotected=broker_open and stop is None,
        unknown_orders=unknown,
    )
