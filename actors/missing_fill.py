"""The rest of a filled stop's fill that never arrived, booked by the heal.

A stop the venue said filled whose executions did not all come: the broker's
quantity, which the heal takes, holds the venue's whole fill. What of it never
came is booked as one fill of the stop (``model.absorb_fill_rest``), priced
from the broker's record of the order where it can tell, so the trade's
record and realized P&L hold it; the executions, if they come later, are
booked without moving the position again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from actors import model
from actors.findings import latest_execution
from actors.messages import Reconcile
from actors.state import PositionState, StopOrder
from brokers.base import BrokerError, Execution
from persistence.protocol import PutClosedTrade, ResolveIntent, Write
from runtime.alerts import Severity

if TYPE_CHECKING:
    from actors.position import PositionActor

__all__ = ["absorb_fill_rest"]

_log = logging.getLogger(__name__)


async def absorb_fill_rest(
    actor: PositionActor,
    state: PositionState,
    msg: Reconcile,
    writes: list[Write],
    actions: list[str],
) -> tuple[PositionState, StopOrder | None]:
    """Settle a stop the venue said filled whose executions never all arrived.

    The broker's quantity, which the heal takes, holds the venue's whole fill.
    What of it never came is booked as one fill of the stop, priced from the
    broker's record of the order where it can tell (``_missing_fill_price``),
    so the trade's record holds it; the stop and its intent settle as filled,
    and the executions still to come, if they come, are booked without moving
    the position again (``model.absorb_fill_rest``). Loudly: the alert says
    what is missing. Return the state and the stop settled (None when there
    was none).
    """
    stop = state.stop
    if stop is None or not stop.filled_at_venue:
        return state, None
    cid = stop.client_order_id
    came = [ex for ex in msg.executions if ex.client_order_id == cid]
    last = latest_execution(came)
    price, source = await _missing_fill_price(actor, stop, came, last)
    applied = model.absorb_fill_rest(
        state, price, last.ts if last is not None else actor.ctx.clock.now()
    )
    if state.intent(cid) is not None:
        writes.append(ResolveIntent(cid, "filled", stop.order_id))
    writes.extend(PutClosedTrade(trade) for trade in applied.closed)
    broker_qty = msg.position.qty if msg.position is not None else 0.0
    actions.append(
        f"settled filled stop {cid}: {stop.qty} of its fill never arrived, booked at {price} "
        f"({source}); position {applied.state.qty}, broker {broker_qty}"
    )
    actor._alert(
        "missing_fill",
        Severity.WARNING,
        f"stop {cid} filled at the broker but {stop.qty} of its {stop.order_qty} never arrived "
        f"as executions: booked at {price} ({source}); those executions, if they come, are "
        "booked without moving the position",
    )
    return applied.state, stop


async def _missing_fill_price(
    actor: PositionActor, stop: StopOrder, came: Sequence[Execution], last: Execution | None
) -> tuple[float, str]:
    """Return the price of what of ``stop``'s fill never arrived, and where it came from.

    The broker's order knows the fill's total and average price: what of it the
    executions that came (``came``) do not account for is the missing part's
    value. Where the broker cannot tell (unreachable, no average, a total that
    does not cover what came, a price that is not one), the estimate: the price
    of the last execution that came (``last``), else the stop's price.
    """
    missing = stop.qty
    try:
        order = await actor.ctx.broker.order_by_client_id(stop.client_order_id)
    except BrokerError as exc:
        _log.warning("%s: stop %s not read back: %s", actor.symbol, stop.client_order_id, exc)
        order = None
    if order is not None and order.avg_fill_price is not None and missing > 0:
        came_qty = math.fsum(ex.qty for ex in came)
        if abs(order.filled_qty - (came_qty + missing)) < 1e-9:
            value = order.avg_fill_price * order.filled_qty - math.fsum(
                ex.price * ex.qty for ex in came
            )
            price = round(value / missing, 9)
            if 0.0 < price < math.inf:
                return price, "from the broker's average fill price"
    return (last.price if last is not None else stop.price), "estimated"
