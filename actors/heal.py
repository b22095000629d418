"""Healing one symbol inside its actor: the shell around ``plan_symbol``.

Runs in the position actor's turn, so nothing races it for the symbol. Order:
plan, decide the new state, commit it (with closed-trade rows), and only then
act at the broker (restore a stop, flatten an orphan). A dry run returns the
plan and changes nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

from actors import model
from actors.messages import Reconcile, ReconcileOutcome
from actors.reconcile import Finding, plan_symbol
from actors.state import Mode, PositionState
from brokers.base import BrokerError
from persistence.protocol import ClosedTradeRow, PutClosedTrade, ResolveIntent, Write
from runtime.alerts import Severity

if TYPE_CHECKING:
    from actors.position import PositionActor

__all__ = ["heal_symbol"]

_log = logging.getLogger(__name__)


async def heal_symbol(actor: PositionActor, msg: Reconcile) -> ReconcileOutcome:
    """Reconcile ``actor`` against ``msg``'s broker truth; see the module docstring."""
    plan = plan_symbol(actor.state, msg.position, msg.open_orders)
    actions: list[str] = []
    outcome = ReconcileOutcome(
        symbol=actor.symbol,
        finding=plan.finding.value,
        local_qty=plan.local_qty,
        broker_qty=plan.broker_qty,
        local_avg=plan.local_avg,
        broker_avg=plan.broker_avg,
        unprotected=plan.unprotected,
    )
    if msg.dry_run or not msg.heal:
        return outcome

    now = actor.ctx.clock.now()
    state = actor.state
    old_stop_price = state.stop.price if state.stop is not None else state.planned_stop
    writes: list[Write] = []
    match plan.finding:
        case Finding.ZOMBIE:
            state, trade = model.close_externally(state, now, msg.last_exit_price)
            if trade is not None:
                writes.append(PutClosedTrade(ClosedTradeRow(**msgspec.structs.asdict(trade))))
            actions.append(f"closed as CLOSED_EXTERNALLY (exit {msg.last_exit_price})")
            actor._alert(
                "zombie",
                Severity.WARNING,
                f"open here ({plan.local_qty}), flat at the broker: closed as CLOSED_EXTERNALLY",
            )
        case Finding.ORPHAN:
            mode = Mode.WATCH if msg.orphan_mode == "adopt" else Mode.MANAGED
            state = model.adopt(state, plan.broker_qty, plan.broker_avg, now, mode)
            actions.append(f"adopted ({msg.orphan_mode}) {plan.broker_qty} @ {plan.broker_avg}")
            actor._alert(
                "orphan",
                Severity.CRITICAL,
                f"open at the broker ({plan.broker_qty} @ {plan.broker_avg}), unknown here: "
                f"adopted, policy {msg.orphan_mode}",
            )
        case Finding.DRIFT:
            state = model.override_quantity(state, plan.broker_qty, plan.broker_avg)
            actions.append(f"broker override qty {plan.local_qty}->{plan.broker_qty}")
            actor._alert(
                "drift",
                Severity.WARNING,
                f"local {plan.local_qty} @ {plan.local_avg} vs broker {plan.broker_qty} @ "
                f"{plan.broker_avg}: broker wins",
            )
        case Finding.OK:
            pass

    state, intent_writes = await _settle_intents(actor, state, msg)
    writes.extend(intent_writes)
    if plan.broker_stop is not None:
        stop = actor.stop_from_order(plan.broker_stop)
        if state.stop != stop:
            state = model.set_stop(state, stop)
            actions.append(f"stop attached {stop.client_order_id} @ {stop.price}")
    elif state.stop is not None and state.intent(state.stop.client_order_id) is None:
        state = model.set_stop(state, None)
    await actor._commit(state, writes)
    await _refill_bars(actor)

    if plan.finding is Finding.ORPHAN and msg.orphan_mode == "flatten":
        await actor._flatten("flatten")
        actions.append("flatten sent")
    if plan.unprotected and abs(actor.state.qty) > 0 and actor.state.stop is None:
        actions.extend(await _protect(actor, msg, old_stop_price))
    return msgspec.structs.replace(outcome, actions=tuple(actions))


async def _settle_intents(
    actor: PositionActor, state: PositionState, msg: Reconcile
) -> tuple[PositionState, list[Write]]:
    """Resolve intents the broker has no open order for (filled, canceled or never sent)."""
    open_by_cid = {o.client_order_id: o for o in msg.open_orders}
    writes: list[Write] = []
    for intent in state.intents:
        order = open_by_cid.get(intent.client_order_id)
        if order is not None:
            state = model.resolve_intent(state, intent.client_order_id, order_id=order.order_id)
            continue
        try:
            found = await actor.ctx.broker.order_by_client_id(intent.client_order_id)
        except BrokerError:
            continue  # unknown: keep it pending, never guess
        status = "lost" if found is None else found.status.value
        state = model.resolve_intent(state, intent.client_order_id, done=True)
        writes.append(ResolveIntent(intent.client_order_id, status))
        _log.info("%s: intent %s settled as %s", actor.symbol, intent.client_order_id, status)
    return state, writes


async def _protect(actor: PositionActor, msg: Reconcile, price: float | None) -> list[str]:
    if not msg.restore_stop or actor.state.mode is not Mode.MANAGED or price is None:
        actor._alert(
            "unprotected",
            Severity.CRITICAL,
            f"position {actor.state.qty} has no stop at the broker"
            + ("" if price is not None else " and no stop price is known"),
        )
        return ["unprotected: alerted"]
    state = msgspec.structs.replace(actor.state, planned_stop=price)
    state, intent, writes = actor.desk.plan_stop(state)
    if intent is None:
        return []
    await actor._commit(state, writes)
    order = await actor.desk.send(intent)
    actor._alert(
        "unprotected",
        Severity.WARNING,
        f"stop was missing at the broker: restored {intent.client_order_id} @ {price}"
        + ("" if order is not None else " (send failed; pending)"),
    )
    return [f"stop restored @ {price}"]


async def _refill_bars(actor: PositionActor) -> None:
    """Fill the gap since the last buffered bar from broker history, so no warm-up is needed."""
    broker = actor.ctx.broker
    if not broker.capabilities.history:
        return
    now = actor.ctx.clock.now()
    bar = timedelta(seconds=actor.ctx.bar_seconds)
    span = bar * actor.ctx.bar_capacity
    last = actor.bars.last_time()
    start = max(last + bar, now - span) if last is not None else now - span
    if now - start < bar:
        return
    try:
        history = await broker.history(actor.symbol, start, now)
    except BrokerError as exc:
        _log.warning("%s: bar refill failed: %s", actor.symbol, exc)
        return
    for item in history:
        if item.ts + bar <= now:
            actor.bars.append(item)
    actor._dirty = True
