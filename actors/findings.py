"""What recovery finds in one symbol, as the supervisor and the actor's heal both see it.

Pure functions over a position's state and the broker's truth: the client
order id prefix that marks an order as this trader's, the comparable text of a
discrepancy (what a periodic run confirms before healing), and what a hand
trade (a fill of an order nobody here sent) did to a held position, as the
report names it: orphan, drift or zombie.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import msgspec

from actors import model
from actors.messages import ReconcileOutcome
from actors.reconcile import Finding, SymbolPlan, plan_symbol
from actors.state import PositionState
from brokers.base import BrokerPosition, Execution, Order

__all__ = [
    "EXTERNAL_RANK",
    "assumed_position",
    "discrepancy",
    "external_kind",
    "label_external",
    "latest_execution",
    "own_prefix",
    "replays_hand_trade",
    "signature",
]


def own_prefix(account: str, symbol: str) -> str:
    """Return how every client order id this trader sends for ``symbol`` begins."""
    sample = model.client_order_id(account, symbol, date(2000, 1, 1), 0, "x")
    return sample[: sample.index(f"-{symbol}-") + len(symbol) + 2]


def signature(plan: SymbolPlan) -> str | None:
    """Return the plan's discrepancy as a comparable text; None when there is none."""
    if plan.finding is Finding.OK and not plan.unprotected:
        return None
    return (
        f"{plan.finding.value} local {plan.local_qty} @ {plan.local_avg} broker "
        f"{plan.broker_qty} @ {plan.broker_avg}" + (" unprotected" if plan.unprotected else "")
    )


def discrepancy(
    state: PositionState,
    position: BrokerPosition | None,
    orders: Sequence[Order],
    *,
    verify: bool = True,
) -> str | None:
    """Return what differs between ``state`` and the broker, as a comparable text, or None."""
    position = position if verify else assumed_position(state)
    return signature(plan_symbol(state, position, orders))


def replays_hand_trade(state: PositionState, ex: Execution) -> bool:
    """Return whether a replay applies hand trade ``ex`` as a fill: only against the side
    ``state`` holds (it reduces, closes or flips); one that opens or adds is the plan's.
    """
    return state.qty * ex.side.sign < 0


# Which hand trade a symbol's report names when a replay met several.
EXTERNAL_RANK = {"added": 0, "reduced": 0, "closed": 1, "opened": 2}


def external_kind(before: PositionState, applied: model.Applied, ex: Execution) -> str | None:
    """Return what a fill of an order unknown to ``before`` did, or None for a known order.

    ``opened``: it opened (or, crossing zero, flipped) a position; ``closed``: it
    closed the one held; ``reduced``: it took part of it; ``added``: it added to it.
    """
    if before.intent(ex.client_order_id) is not None:
        return None
    if not applied.state.is_flat and (before.is_flat or applied.closed):
        return "opened"
    if applied.closed:
        return "closed"
    if applied.partial is not None:
        return "reduced"
    if abs(applied.state.qty) > abs(before.qty) and not ex.client_order_id.startswith(
        own_prefix(before.account, before.symbol)
    ):  # one of ours whose intent is settled already (a late part of our entry) is ours
        return "added"
    return None


def label_external(
    outcome: ReconcileOutcome, external: str | None, held: tuple[float, float] | None
) -> ReconcileOutcome:
    """Report a replayed hand trade as what it was: orphan, drift (a partial) or zombie.

    ``held``: the (qty, avg price) held here before the first hand trade; a
    drift reports it as the local side (what the hand trade changed).
    """
    if external is None or outcome.finding != "ok":
        return outcome
    finding = {"opened": "orphan", "reduced": "drift", "added": "drift"}.get(external, "zombie")
    action = f"replayed external fill ({external})"
    local_qty, local_avg = outcome.local_qty, outcome.local_avg
    if external in ("reduced", "added") and held is not None:
        local_qty, local_avg = held
    return msgspec.structs.replace(
        outcome,
        finding=finding,
        local_qty=local_qty,
        local_avg=local_avg,
        actions=(*outcome.actions, action),
    )


def assumed_position(state: PositionState) -> BrokerPosition | None:
    """Return the position ``state`` holds, as a broker that reports none is taken to."""
    if state.is_flat:
        return None
    return BrokerPosition(symbol=state.symbol, qty=state.qty, avg_price=state.avg_price)


def latest_execution(executions: Iterable[Execution]) -> Execution | None:
    """Return the latest of ``executions`` (by time, then id), None when there is none."""
    return max(executions, key=lambda ex: (ex.ts, ex.exec_id), default=None)
